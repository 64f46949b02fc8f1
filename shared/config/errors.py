"""Readable validation errors for integrators."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

_FIELD_PREFIX = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\[\]]*): (.+)$")
_VALUE_ERROR_PREFIX = "Value error, "


def _constraint_message(err: Any) -> str:
    """Plain words for pydantic's built-in constraint errors; the original text otherwise."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = f" (got {err['input']!r})" if "input" in err and kind != "missing" else ""
    words = {
        "greater_than_equal": "must be at least {ge}",
        "greater_than": "must be greater than {gt}",
        "less_than_equal": "must be at most {le}",
        "less_than": "must be less than {lt}",
        "missing": "required setting is missing",
        "extra_forbidden": "unknown setting (check the spelling)",
    }
    if kind == "extra_forbidden":
        return words[kind]
    if kind in words:
        return words[kind].format(**ctx) + got
    msg: str = err["msg"]
    return msg.removeprefix(_VALUE_ERROR_PREFIX)


def explain_errors(exc: ValidationError) -> list[str]:
    """One line per problem: the dotted field path, a colon and what is wrong.

    Model-level checks report several problems in one error, one per line, each starting with
    the field it concerns; that field is joined to the error's location. A problem of several
    settings names each, comma-separated ("contactors.precharge_timeout_s,
    contactors.precharge_resistor_ohm: ..."; only at the top level, where there is no location).
    """
    return [line for err in exc.errors() for line in explain_error(err)]


def explain_error(err: Any) -> list[str]:
    """The lines of one of pydantic's `ValidationError.errors()` (see `explain_errors`)."""
    lines: list[str] = []
    loc = ".".join(str(part) for part in err["loc"])
    for text in _constraint_message(err).splitlines():
        match = _FIELD_PREFIX.match(text)
        if match and loc:
            lines.append(f"{loc}.{match.group(1)}: {match.group(2)}")
        elif loc:
            lines.append(f"{loc}: {text}")
        else:
            lines.append(text)
    return lines
