"""Upper bound of a payload's msgpack size, derived from its model's length bounds (pure).

Every list, tuple, map and string a payload may carry must have a length bound
(`max_length`); `max_encoded_bytes` walks the model's JSON schema and adds up the largest
msgpack encoding of each field, or raises `UnboundedFieldError` naming the first field without a
bound. The bus refuses a payload over its topic's limit before decoding it (shared/bus/core.py),
so no single message can cost more decoding time than the largest valid one.

msgpack sizes (github.com/msgpack/msgpack/blob/master/spec.md): nil, bool 1 byte; int at most
9 (uint64/int64); float 9 (float64, as msgpack-python packs Python floats); str and bin a header
of at most 5 plus the bytes (UTF-8: at most 4 bytes per character); array and map a header of at
most 5 plus their items.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

HEADER_BYTES: Final = 5
"""str32 / array32 / map32 header: type byte and a 32-bit length."""
SCALAR_BYTES: Final = {"integer": 9, "number": 9, "boolean": 1, "null": 1}
UTF8_BYTES_PER_CHAR: Final = 4


class UnboundedFieldError(ValueError):
    """A list, map or string without a length bound: the payload has no finite size."""


def max_encoded_bytes(model: type[BaseModel]) -> int:
    """The largest msgpack encoding of any valid `model` (every optional field present)."""
    schema = model.model_json_schema(mode="validation")
    return _bytes(schema, schema.get("$defs", {}), model.__name__)


def _str_bytes(chars: int) -> int:
    return HEADER_BYTES + UTF8_BYTES_PER_CHAR * chars


def _bytes(schema: dict[str, Any], defs: dict[str, Any], where: str) -> int:
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return _bytes(defs[name], defs, where)
    if "anyOf" in schema:
        return max(_bytes(s, defs, where) for s in schema["anyOf"])
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return max(_value_bytes(v) for v in values)
    kind = schema.get("type")
    if kind in SCALAR_BYTES:
        return SCALAR_BYTES[kind]
    if kind == "string":
        return _str_bytes(_bound(schema, "maxLength", where))
    if kind == "array":
        fixed = schema.get("prefixItems")
        if fixed is not None and schema.get("items") is False:
            items = sum(_bytes(s, defs, f"{where}[]") for s in fixed)
            return HEADER_BYTES + items
        count = _bound(schema, "maxItems", where)
        return HEADER_BYTES + count * _bytes(schema.get("items", {}), defs, f"{where}[]")
    if kind == "object":
        total = HEADER_BYTES
        for name, sub in schema.get("properties", {}).items():
            total += _str_bytes(len(name)) + _bytes(sub, defs, f"{where}.{name}")
        extra = schema.get("additionalProperties")
        if extra is True:
            raise UnboundedFieldError(f"{where}: a map of any values has no size bound")
        if isinstance(extra, dict):
            count = _bound(schema, "maxProperties", where)
            key = _bytes(
                {"type": "string", **schema.get("propertyNames", {})}, defs, f"{where}{{}}"
            )
            total += count * (key + _bytes(extra, defs, f"{where}{{}}"))
        return total
    raise UnboundedFieldError(f"{where}: type {kind or 'any'} has no size bound")


def _bound(schema: dict[str, Any], key: str, where: str) -> int:
    if key not in schema:
        raise UnboundedFieldError(f"{where}: no {key}")
    return int(schema[key])


def _value_bytes(value: Any) -> int:
    if isinstance(value, str):
        return HEADER_BYTES + len(value.encode())
    return 9


def list_item_bytes(model: type[BaseModel], field: str) -> int:
    """The largest msgpack encoding of one item of the list field `field` of `model`."""
    schema = model.model_json_schema(mode="validation")
    defs = schema.get("$defs", {})
    sub = schema["properties"][field]
    arrays = [s for s in sub.get("anyOf", [sub]) if s.get("type") == "array"]
    if len(arrays) != 1:
        raise ValueError(f"{model.__name__}.{field} is not a list field")
    return _bytes(arrays[0].get("items", {}), defs, f"{model.__name__}.{field}[]")


NEWER_FIELDS_SHARE: Final = 4
NEWER_FIELDS_BYTES: Final = 1024
"""Headroom of a topic's byte limit over its model's largest payload: a newer publisher of the
same schema version may send fields this one does not know yet (`Message` ignores them)."""


def topic_limit_bytes(payload_bytes: int) -> int:
    """The byte limit of a topic whose largest valid payload is `payload_bytes`."""
    return payload_bytes + payload_bytes // NEWER_FIELDS_SHARE + NEWER_FIELDS_BYTES
