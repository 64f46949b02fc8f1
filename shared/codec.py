"""msgpack encoding and validating decoding of bus payloads.

Decoding never raises anything but `PayloadError`, which names the topic and the field. Its cost
is bounded: the bus refuses a payload over its topic's byte limit before calling `decode`, every
list of a model has a length bound, and list fields stop at their first bad item (`fail_fast`),
so a refusal builds a handful of errors, never one per item.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import msgpack
from pydantic import ValidationError

from shared import SCHEMA_VERSION
from shared.messages import Message

M = TypeVar("M", bound=Message)

MAX_PAYLOAD_BYTES = 1 << 20
"""Absolute cap for callers without a topic limit (tools); topics have their own, smaller."""
CONTENT_TYPE = "application/msgpack"
JSON_CONTENT_TYPE = "application/json"


class PayloadError(ValueError):
    """A payload that cannot be accepted: bad bytes, wrong type, out of range, unknown version."""

    def __init__(self, topic: str, field: str, reason: str) -> None:
        super().__init__(f"{topic}: {field}: {reason}")
        self.topic = topic
        self.field = field
        self.reason = reason


class EncodeError(ValueError):
    """A message that msgpack cannot represent (e.g. an integer beyond 64 bits)."""


def encode(message: Message, *, source: str, seq: int, ts: float) -> bytes:
    """Pack a message as a msgpack map, filling the envelope fields left unset."""
    try:
        return _pack(message.stamped(source=source, seq=seq, ts=ts))
    except (OverflowError, TypeError, ValueError) as exc:
        raise EncodeError(f"cannot encode {type(message).__name__}: {exc}") from exc


def encode_json(message: Message, *, source: str, seq: int, ts: float) -> bytes:
    """The same map as `encode`, as compact UTF-8 JSON (the integrations bridge's mirror);
    unknown values are `null`, never a number."""
    try:
        text = json.dumps(
            message.stamped(source=source, seq=seq, ts=ts),
            separators=(",", ":"),
            allow_nan=False,
            ensure_ascii=False,
        )
    except (TypeError, ValueError) as exc:
        raise EncodeError(f"cannot encode {type(message).__name__} as JSON: {exc}") from exc
    return text.encode()


def _pack(data: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def unpack(topic: str, raw: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """The msgpack map in `raw`, or PayloadError (also when `raw` is over `max_bytes`)."""
    if len(raw) > max_bytes:
        raise PayloadError(topic, "<payload>", f"{len(raw)} bytes exceeds {max_bytes}")
    try:
        data = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise PayloadError(topic, "<payload>", f"not valid msgpack ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise PayloadError(topic, "<payload>", f"expected a map, got {type(data).__name__}")
    return data


def validate(model: type[M], topic: str, data: dict[str, Any]) -> M:
    """Validate an unpacked map against `model`, or PayloadError naming the first bad field."""
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PayloadError(
            topic,
            "schema_version",
            f"unsupported schema version {version!r}, expected {SCHEMA_VERSION}",
        )
    try:
        message = model.model_validate(data)
    except ValidationError as exc:
        # one message for the first error: no URL, context or input copied for the others
        count = exc.error_count()
        first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "<payload>"
        more = f" (+{count - 1} more)" if count > 1 else ""
        raise PayloadError(topic, where, f"{first['msg']}{more}") from exc
    except Exception as exc:  # a validator bug must not take the service down
        raise PayloadError(topic, "<payload>", f"{type(exc).__name__}: {exc}") from exc
    if message.seq is None or message.ts is None or not message.source:
        raise PayloadError(topic, "envelope", "source, seq and ts are required")
    return message


def decode(model: type[M], topic: str, raw: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> M:
    return validate(model, topic, unpack(topic, raw, max_bytes))
