"""Generate the third-party docs from the topic registry: `python -m shared.docgen [--check]`.

Writes `docs/asyncapi.yaml` (AsyncAPI 3), `docs/topics.md`, `docs/event-codes.md`,
`docs/fault-matrix.md` (with the committed fault-injection results, docs/data/fault-matrix.json,
which `bench/fault_matrix.py` writes: the docs never rerun it), `docs/chaos.md` (from
docs/data/chaos.json, which `bench/chaos.py` writes) and `docs/configuration-fields.md`;
`--check` fails when the committed files differ from what the code gives.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared import SCHEMA_VERSION
from shared.chaos import chaos_markdown
from shared.chaos import load as load_chaos
from shared.codec import CONTENT_TYPE, JSON_CONTENT_TYPE
from shared.docgen_codes import (
    config_fields_markdown,
    event_codes_markdown,
    fault_matrix_markdown,
)
from shared.endpoint import DEFAULT_MQTT_PROTOCOL
from shared.fault_matrix import load as load_matrix
from shared.messages import COMMAND_ARGS
from shared.topics import (
    BROKER_MESSAGE_SIZE_LIMIT,
    COMMAND_SENDERS,
    OUTSIDE_TOPICS,
    PROTOBUF_CONTENT_TYPE,
    ROOT,
    SPARKPLUG_PROTO,
    TOPICS,
    OutsideTopic,
    TopicSpec,
)

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
REF = "#/components/schemas/{model}"

PARAM_TEXT = {
    "system": "System id: one string of up to 196 series cells (lower-case, digits, '-', '_').",
    "module": "Module index within the system, from 0.",
    "modules": "The module range a slave agent hosts, `first-last` (e.g. `0-13`); the broker "
    "ACL grants a rack its own range only.",
    "command": "Command name, with who may send it (the broker ACL grants each one): "
    + "; ".join(f"{c} ({', '.join(COMMAND_SENDERS[c])})" for c in sorted(COMMAND_ARGS))
    + ".",
    "client": "Reply channel of one command client, named in the request's `reply_to`.",
    "user": "The requester's broker user: the broker ACL lets that user alone read the "
    "replies under it (the master writes them all).",
    "service": "Service instance name, e.g. `master_core` or `slave_agent-rack1`.",
    "source": "The publishing service instance (`master_core`, `can_gateway`, ...): filled in "
    "by the bus, and the broker ACL lets each user publish under its own name only.",
    "instance": "The service instance whose presence the integrations bridge mirrors.",
}


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for spec in TOPICS:
        schema = spec.payload.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[spec.payload.__name__] = schema
    for model in _command_arg_models():
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return dict(sorted(schemas.items()))


def _command_arg_models() -> list[type[BaseModel]]:
    return [COMMAND_ARGS[name] for name in sorted(COMMAND_ARGS)]


def _address(spec: TopicSpec[Any]) -> str:
    return f"{ROOT}/{{system}}/{spec.template}"


def asyncapi() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in TOPICS:
        model = spec.payload.__name__
        message_name = model if spec.content_type == CONTENT_TYPE else f"{model}Json"
        messages[message_name] = {
            "name": message_name,
            "title": model,
            "contentType": spec.content_type,
            "summary": (spec.payload.__doc__ or model).strip().splitlines()[0],
            "payload": {"$ref": REF.format(model=model)},
        }
        params = ("system", *spec.params)
        channels[spec.name] = {
            "address": _address(spec),
            "description": spec.description,
            "parameters": {p: {"description": PARAM_TEXT[p]} for p in params},
            "messages": {message_name: {"$ref": f"#/components/messages/{message_name}"}},
            "x-publishers": list(spec.publishers),
            "x-subscribers": list(spec.subscribers),
            "x-rate": spec.rate,
            "x-max-payload-bytes": spec.byte_limit,
            **({"x-last-will": True} if spec.last_will else {}),
        }
        operation_binding: dict[str, Any] = {"qos": spec.qos, "retain": spec.retain}
        if spec.expiry_s:
            operation_binding["messageExpiryInterval"] = spec.expiry_s
        operation_binding["bindingVersion"] = "0.2.0"
        operations[spec.name] = {
            "action": "send",
            "summary": f"Published by {', '.join(spec.publishers)} ({spec.rate}).",
            "channel": {"$ref": f"#/channels/{spec.name}"},
            "messages": [{"$ref": f"#/channels/{spec.name}/messages/{message_name}"}],
            "bindings": {"mqtt": operation_binding},
        }
    _outside_channels(channels, operations, messages)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "BMS bus",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": (
                "Topic tree of the battery management system. Payloads are msgpack maps with "
                "string keys; every message carries `schema_version`, `source`, a per-topic "
                "monotonic `seq` and a Unix time stamp `ts`; the `json/` topics of the "
                "integrations bridge carry the same maps as JSON. Commands carry their correlation "
                "id, reply topic and expiry in the payload, so MQTT 3.1.1 clients can use them. "
                "The channels outside `bms/v1/` (`x-outside-root`) follow their consumers' "
                "conventions: Home Assistant discovery (JSON) and Sparkplug B (protobuf, "
                "schema `sparkplug_b.proto` inline)."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "local": {
                "host": "localhost:1883",
                "protocol": "mqtt",
                "protocolVersion": DEFAULT_MQTT_PROTOCOL,
                "description": (
                    f"The stack's broker. The services speak MQTT {DEFAULT_MQTT_PROTOCOL} by "
                    "default (BMS_MQTT_PROTOCOL chooses 5 instead); the broker serves both. No "
                    "channel needs an MQTT 5 feature: the bindings' messageExpiryInterval is "
                    "set only on MQTT 5 connections, and payloads carry their own deadlines."
                ),
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": _schemas()},
    }


def _outside_message(topic: OutsideTopic) -> tuple[str, dict[str, Any]]:
    """The component message of an outside topic: Sparkplug's protobuf `Payload` (its .proto
    inline, AsyncAPI 3's Multi Format Schema Object), or a JSON / text payload."""
    if topic.content_type == PROTOBUF_CONTENT_TYPE:
        return "SparkplugPayload", {
            "name": "SparkplugPayload",
            "title": "Sparkplug B Payload",
            "contentType": PROTOBUF_CONTENT_TYPE,
            "summary": "Sparkplug B 3.0 protobuf message org.eclipse.tahu.protobuf.Payload; "
            "not msgpack.",
            "payload": {
                "schemaFormat": topic.schema_format,
                "schema": (REPO / SPARKPLUG_PROTO).read_text(),
            },
        }
    name = "".join(w.title() for w in topic.name.split("_"))
    schema: dict[str, Any] = (
        {"type": "object", "description": topic.payload}
        if topic.content_type == JSON_CONTENT_TYPE
        else {"type": "string", "enum": ["online", "offline"], "description": topic.payload}
    )
    return name, {
        "name": name,
        "title": name,
        "contentType": topic.content_type,
        "summary": topic.payload,
        "payload": schema,
    }


def _outside_channels(
    channels: dict[str, Any], operations: dict[str, Any], messages: dict[str, Any]
) -> None:
    for topic in OUTSIDE_TOPICS:
        message_name, message = _outside_message(topic)
        messages[message_name] = message
        channels[topic.name] = {
            "address": topic.address,
            "description": topic.description,
            "parameters": {p: {"description": d} for p, d in topic.params.items()},
            "messages": {message_name: {"$ref": f"#/components/messages/{message_name}"}},
            "x-publishers": list(topic.publishers),
            "x-subscribers": list(topic.subscribers),
            "x-rate": topic.rate,
            "x-outside-root": True,
            **({"x-last-will": True} if topic.last_will else {}),
        }
        operations[topic.name] = {
            "action": "send",
            "summary": f"Published by {', '.join(topic.publishers)} ({topic.rate}).",
            "channel": {"$ref": f"#/channels/{topic.name}"},
            "messages": [{"$ref": f"#/channels/{topic.name}/messages/{message_name}"}],
            "bindings": {
                "mqtt": {"qos": topic.qos, "retain": topic.retain, "bindingVersion": "0.2.0"}
            },
        }


def _type_text(schema: dict[str, Any] | bool) -> str:
    if not isinstance(schema, dict):
        return "any"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_type_text(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " / ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type_text(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        return f"map of {_type_text(schema['additionalProperties'])}"
    bounds = [f"{k} {schema[k]}" for k in ("minimum", "maximum") if k in schema]
    return str(kind) + (f" ({', '.join(bounds)})" if bounds else "")


def topics_markdown() -> str:
    lines = [
        "# Topic tree",
        "",
        "Generated from `shared/topics.py` by `python -m shared.docgen`; do not edit by hand.",
        "",
        f"Every topic sits under `{ROOT}/{{system}}/`. Payloads are msgpack maps with string keys "
        f"(`{CONTENT_TYPE}`), schema version {SCHEMA_VERSION}. Every payload carries "
        "`schema_version`, `source` (the publishing service instance), `seq` (monotonic per "
        "topic and publisher) and `ts` (Unix seconds).",
        "",
        "Module, cell and sensor indices count from 0 in every payload (`module`, `index`, "
        "`channel`, `stale_modules`, an event's `values`) and in topic levels "
        "(`slave/{module}/...`); people see them from 1, as the web application shows them "
        "(module 0, index 2 is M1 · C3). See [Numbering](architecture.md#numbering-people-count-"
        "from-1-the-contract-from-0).",
        "",
        f"The integrations bridge (`services/integrations`) mirrors some topics under `json/` "
        f"as JSON (`{JSON_CONTENT_TYPE}`) with the same schema and the original envelope, and "
        "publishes Home Assistant discovery documents and, with `BMS_SPARKPLUG`, a Sparkplug "
        "B edge node (the site) with a device per system, in Sparkplug B 3.0 protobuf (see "
        "[Topics outside](#topics-outside-bmsv1)). It reads what a third party may read and "
        "publishes nothing else.",
        "",
        "Each topic has a byte limit, derived from the length bounds of its payload model "
        "(every list, map and string has one) with room for fields of newer publishers: a "
        "larger payload is refused before it is decoded, counted and logged. The broker drops "
        f"any payload over {BROKER_MESSAGE_SIZE_LIMIT} bytes (`message_size_limit`).",
        "",
        "| Topic | Payload | QoS | Retained | Published by | Read by | Rate | Max bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec in TOPICS:
        retained = "yes" + (", last will" if spec.last_will else "") if spec.retain else "no"
        payload = spec.payload.__name__ + ("" if spec.content_type == CONTENT_TYPE else " (JSON)")
        lines.append(
            f"| `{_address(spec)}` | {payload} | {spec.qos} | {retained} | "
            f"{', '.join(spec.publishers)} | {', '.join(spec.subscribers)} | {spec.rate} | "
            f"{spec.byte_limit} |"
        )
    lines += ["", "## Topics", ""]
    for spec in TOPICS:
        lines += [f"### `{spec.template}`", "", spec.description, ""]
        if "command" in spec.params:
            lines += [
                "| Command | Arguments | Sent by (the broker ACL grants each) |",
                "|---|---|---|",
            ]
            lines += [
                f"| `{c}` | {COMMAND_ARGS[c].__name__} | {', '.join(COMMAND_SENDERS[c])} |"
                for c in sorted(COMMAND_ARGS)
            ]
            lines.append("")
    lines += [
        f"## Topics outside `{ROOT}/`",
        "",
        "Declared in `shared/topics.py` (`OUTSIDE_TOPICS`) for these docs and the broker ACL; "
        "the bus never subscribes to them, and their payloads are not msgpack. The ACL "
        "column is the filter the broker grants (`{system}`: the deployed system; "
        "`{edge_node}`: the bridge's Sparkplug edge node id, `+` when the ACL is made "
        "without one).",
        "",
        "| Topic | Payload | Content type | QoS | Retained | Published by | Read by | Rate "
        "| ACL filter |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in OUTSIDE_TOPICS:
        retained = "yes" if t.retain else "no"
        lines.append(
            f"| `{t.address}` | {t.payload} | `{t.content_type}` | {t.qos} | {retained} | "
            f"{', '.join(t.publishers)} | {', '.join(t.subscribers)} | {t.rate} | "
            f"`{t.acl_filter}` |"
        )
    lines.append("")
    for t in OUTSIDE_TOPICS:
        lines += [f"### `{t.address}`", "", t.description, ""]
        lines += [f"- `{p}`: {d}" for p, d in t.params.items()] + [""]
    lines += ["## Payloads", ""]
    schemas = _schemas()
    for name, schema in schemas.items():
        props = schema.get("properties")
        if not props:
            continue
        required = set(schema.get("required", []))
        lines += [f"### {name}", ""]
        doc = schema.get("description")
        if doc:
            lines += [" ".join(str(doc).split()), ""]
        lines += ["| Field | Type | Required |", "|---|---|---|"]
        for field_name, field_schema in props.items():
            lines.append(
                f"| `{field_name}` | {_type_text(field_schema)} | "
                f"{'yes' if field_name in required else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render() -> dict[Path, str]:
    import yaml

    return {
        DOCS / "asyncapi.yaml": yaml.safe_dump(asyncapi(), sort_keys=False, width=100),
        DOCS / "topics.md": topics_markdown(),
        DOCS / "event-codes.md": event_codes_markdown(),
        DOCS / "fault-matrix.md": fault_matrix_markdown(load_matrix()),
        DOCS / "chaos.md": chaos_markdown(load_chaos()),
        DOCS / "configuration-fields.md": config_fields_markdown(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the docs are out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run `make docs`): " + ", ".join(str(p) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
