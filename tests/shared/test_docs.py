"""The committed docs are what the code generates, and the AsyncAPI document is coherent."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from shared.docgen import asyncapi, render
from shared.endpoint import DEFAULT_MQTT_PROTOCOL
from shared.settings import ServiceSettings
from shared.topics import OUTSIDE_TOPICS, SPARKPLUG_PROTO, TOPICS


def test_committed_docs_match_the_code() -> None:
    for path, text in render().items():
        assert path.exists(), f"{path} is missing: run `make docs`"
        assert path.read_text() == text, f"{path} is out of date: run `make docs`"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert part in node, f"unresolved {ref}"
        node = node[part]
    return node


def test_every_reference_resolves() -> None:
    doc = yaml.safe_load(render()[next(p for p in render() if p.suffix == ".yaml")])
    refs = _refs(doc)
    assert len(refs) > len(TOPICS) * 3
    for ref in refs:
        _resolve(doc, ref)


def test_every_topic_is_a_channel_with_its_bindings() -> None:
    doc = asyncapi()
    assert doc["asyncapi"].startswith("3.")
    for spec in TOPICS:
        channel = doc["channels"][spec.name]
        assert channel["address"].endswith(spec.template)
        assert set(channel["parameters"]) == {"system", *spec.params}
        binding = doc["operations"][spec.name]["bindings"]["mqtt"]
        assert (binding["qos"], binding["retain"]) == (spec.qos, spec.retain)
        schema = doc["components"]["schemas"][spec.payload.__name__]
        assert {"schema_version", "source", "seq", "ts"} <= set(schema["properties"])


def test_the_server_names_the_protocol_the_services_speak_by_default() -> None:
    """The document's MQTT version is the one a service connects with unless told otherwise
    (it once said 5 while the services spoke 3.1.1)."""
    (server,) = asyncapi()["servers"].values()
    assert server["protocolVersion"] == DEFAULT_MQTT_PROTOCOL
    assert ServiceSettings.model_fields["mqtt_protocol"].default == DEFAULT_MQTT_PROTOCOL
    assert f"MQTT {DEFAULT_MQTT_PROTOCOL} by default" in server["description"]


def test_every_outside_topic_is_a_channel_with_its_content_type() -> None:
    """Home Assistant's and Sparkplug's topics are documented with what their payload really
    is: Sparkplug's protobuf with the official .proto inline (AsyncAPI 3's Multi Format Schema
    Object), never a msgpack model."""
    doc = asyncapi()
    proto = (Path(__file__).resolve().parents[2] / SPARKPLUG_PROTO).read_text()
    for topic in OUTSIDE_TOPICS:
        channel = doc["channels"][topic.name]
        assert channel["address"] == topic.address and channel["x-outside-root"] is True
        assert set(channel["parameters"]) == set(re.findall(r"{(\w+)}", topic.address))
        (ref,) = [m["$ref"] for m in channel["messages"].values()]
        message = _resolve(doc, ref)
        assert message["contentType"] == topic.content_type
        binding = doc["operations"][topic.name]["bindings"]["mqtt"]
        assert (binding["qos"], binding["retain"]) == (topic.qos, topic.retain)
        if topic.address.startswith("spBv1.0/{group}/"):  # a host's STATE is JSON (3.0, 7.5)
            assert message["contentType"] == "application/protobuf"
            assert message["payload"]["schemaFormat"].startswith("application/vnd.google.protobuf")
            assert message["payload"]["schema"] == proto and 'syntax = "proto2"' in proto
    assert {"sparkplug_node", "sparkplug_device", "ha_discovery"} <= set(doc["channels"])
    state = _resolve(doc, doc["channels"]["sparkplug_state"]["messages"]["SparkplugState"]["$ref"])
    assert state["contentType"] == "application/json"
