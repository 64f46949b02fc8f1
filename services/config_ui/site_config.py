"""The site configuration as the web application edits it: checked with each problem at its
field, and the site controller's acknowledgement of what it runs.

One web application per site keeps the site configuration (BMS_UI_SITE_CONFIG with
BMS_SITE): versioned in its store (`SiteConfigStore`) and published retained on
`bms/v1/{site}/site/config` when applied; the site controller answers on
`bms/v1/{site}/config/ack/site_controller`. No I/O here.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from shared.config import SiteConfig
from shared.config.errors import explain_errors
from shared.config.limits import SITE_STRINGS_MAX
from shared.messages import ConfigAck

_PATH = r"[a-z_][a-z0-9_.]*"
_LINE = re.compile(rf"^({_PATH}(?:, {_PATH})*): (.*)$", re.DOTALL)
_STRING_FIELDS = ("system", "resistance_mohm", "in_service")
_TOP_FIELDS = (
    "site", "name", "strings", "join_window_v", "current_sharing_factor", "stale_after_s",
)  # fmt: skip


def known_paths() -> frozenset[str]:
    """The fields the site form shows, where a problem may be placed."""
    per_string = (
        f"strings.{i}.{f}" for i in range(SITE_STRINGS_MAX + 1) for f in _STRING_FIELDS
    )  # (one row past the maximum: the 17th string shows its own problem)
    return frozenset((*_TOP_FIELDS, *per_string))


_KNOWN = known_paths()


def _place(path: str) -> str:
    """The deepest known field of a dotted path ("" for the form as a whole)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in _KNOWN:
            return candidate
    return ""


def field_errors(lines: list[str]) -> dict[str, list[str]]:
    """`explain_errors` lines by the field each is at; a problem of several fields
    ("site, strings.0.system: ...") shows at each of them."""
    out: dict[str, list[str]] = {}
    for line in lines:
        match = _LINE.match(line)
        if match is None:
            out.setdefault("", []).append(line)
            continue
        paths, message = match.groups()
        for path in paths.split(", "):
            out.setdefault(_place(path), []).append(message if _place(path) else line)
    return out


def validate_site(data: Any, site: str) -> tuple[SiteConfig | None, dict[str, list[str]]]:
    """The configuration, or the problems by field. `site` is this web application's site
    (BMS_SITE): a configuration for another site is refused at the site field."""
    if not isinstance(data, dict):
        return None, {"": ["the site configuration must be a JSON object"]}
    errors: dict[str, list[str]] = {}
    given = data.get("site", site)
    if given != site:
        errors["site"] = [
            f"this web application keeps the configuration of site {site!r} (BMS_SITE), "
            f"not {given!r}"
        ]
    try:
        config = SiteConfig.model_validate({**data, "site": given})
    except ValidationError as exc:
        for path, messages in field_errors(explain_errors(exc)).items():
            errors.setdefault(path, []).extend(messages)
        return None, errors
    return (None, errors) if errors else (config, {})


class SiteAcks:
    """The site controller's latest acknowledgement (bus thread in, requests out)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._acks: dict[str, tuple[ConfigAck, float]] = {}

    def on_ack(self, ack: ConfigAck) -> None:
        with self._lock:
            self._acks[ack.service] = (ack, self._clock())

    def view(self, version: int | None) -> list[dict[str, Any]]:
        """Each service's acknowledgement, and whether it is of `version` (the newest)."""
        with self._lock:
            acks = sorted(self._acks.items())
        return [
            {
                "service": service,
                "config_version": ack.config_version,
                "accepted": ack.accepted,
                "errors": list(ack.errors),
                "current": version is not None and ack.config_version == version,
                "received_ts": ts,
            }
            for service, (ack, ts) in acks
        ]
