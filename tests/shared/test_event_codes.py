"""Every event code a service emits is in the catalogue (`shared/event_codes.py`).

A static scan of the services: each `.emit(level, kind, code, ...)` and each
`Event(..., code=...)`. A literal code must be catalogued; an f-string must match catalogued
codes (and its expansions are checked from the Literal types the catalogue is built from); a
variable is followed to its literal assignment in the same function. Anything else must be
listed in `ROUTED` with the reason it can only be a catalogued code.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import pytest

from services.master_core.protection import Protection
from shared.config.system import demo_config
from shared.event_codes import BY_CODE, EVENT_CODES, MASTER
from shared.protection_codes import ProtectionCode

SERVICES = Path(__file__).resolve().parents[2] / "services"

EMITTERS = ("emit", "_emit", "_event")
"""Methods taking (level, kind, code, ...): EventLog.emit, the supervisor's _emit and the site
controller's _event."""
EVENT_TYPES = ("Event", "SupervisorEvent", "SiteEvent")
"""Constructors taking the code as keyword or third positional argument."""

ROUTED = {
    # Transition.code is a Protection quantity: test_protection_codes_are_catalogued
    ("master_core/supervisor.py", "t.code"),
    # EventLog.emit and Supervisor._emit themselves: their callers are scanned here, and
    # EventLog counts an unknown code
    ("master_core/events.py", "code"),
    ("master_core/supervisor.py", "code"),
    # the loop logs the supervisor's events, each built (and scanned) in supervisor.py
    ("master_core/service.py", "e.code"),
    # the site controller publishes its core's events, each built (and scanned) in core.py
    ("site_controller/service.py", "e.code"),
    # SiteService._event itself (its store-or-publish fallback): its callers are scanned here
    ("site_controller/service.py", "code"),
}


@dataclass(frozen=True)
class Emission:
    path: str
    line: int
    code: ast.expr
    function: ast.AST | None


def _code_arg(call: ast.Call) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == "code":
            return kw.value
    func = call.func
    positional = (isinstance(func, ast.Attribute) and func.attr in EMITTERS) or (
        isinstance(func, ast.Name) and func.id in EVENT_TYPES
    )
    if positional and len(call.args) >= 3:
        return call.args[2]
    return None


def _emissions() -> list[Emission]:
    out: list[Emission] = []
    for path in sorted(SERVICES.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            is_emit = isinstance(func, ast.Attribute) and func.attr in EMITTERS
            is_event = isinstance(func, ast.Name) and func.id in EVENT_TYPES
            code = _code_arg(node) if is_emit or is_event else None
            if code is None:
                continue
            scope: ast.AST | None = node
            while scope is not None and not isinstance(
                scope, ast.FunctionDef | ast.AsyncFunctionDef
            ):
                scope = parents.get(scope)
            rel = str(path.relative_to(SERVICES))
            out.append(Emission(rel, node.lineno, code, scope))
    return out


def _resolve(e: Emission) -> list[ast.expr]:
    """A name assigned literals in the same function resolves to those literals."""
    if not isinstance(e.code, ast.Name) or e.function is None:
        return [e.code]
    values = [
        node.value
        for node in ast.walk(e.function)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == e.code.id for t in node.targets)
    ]
    return values or [e.code]


def _pattern(joined: ast.JoinedStr) -> re.Pattern[str]:
    parts = [
        re.escape(v.value) if isinstance(v, ast.Constant) else "[a-z0-9_]+" for v in joined.values
    ]
    return re.compile("".join(parts))


EMISSIONS = _emissions()


def test_the_scan_finds_the_emissions() -> None:
    # guards the scan itself: the master emits through EventLog.emit, the CAN gateway builds Event
    paths = {e.path for e in EMISSIONS}
    assert "master_core/supervisor.py" in paths and "can_gateway/service.py" in paths
    assert len([e for e in EMISSIONS if e.path.startswith("master_core/")]) >= 10


@pytest.mark.parametrize("emission", EMISSIONS, ids=lambda e: f"{e.path}:{e.line}")
def test_every_emitted_code_is_catalogued(emission: Emission) -> None:
    where = f"{emission.path}:{emission.line}"
    for expr in _resolve(emission):
        if isinstance(expr, ast.Constant):
            assert expr.value in BY_CODE, f"{where}: event code {expr.value!r} is not catalogued"
        elif isinstance(expr, ast.JoinedStr):
            pattern = _pattern(expr)
            assert any(pattern.fullmatch(code) for code in BY_CODE), (
                f"{where}: no catalogued code matches {ast.unparse(expr)}"
            )
        else:
            source = ast.unparse(expr)
            assert (emission.path, source) in ROUTED, (
                f"{where}: event code {source} cannot be checked; use a literal or add it to "
                f"ROUTED with a test that it is catalogued"
            )


def test_protection_codes_are_catalogued() -> None:
    codes = Protection.from_system(demo_config(), insulation_monitor=True).codes
    assert set(codes) == set(ProtectionCode)
    assert set(codes) <= {e.code for e in EVENT_CODES if e.source == MASTER}


def test_dynamic_codes_expand_to_catalogued_codes() -> None:
    from shared.messages.pack import ContactorState
    from shared.messages.slave import SlaveMode

    for mode in get_args(SlaveMode):
        assert f"mode_{mode}" in BY_CODE
    for state in get_args(ContactorState):
        assert f"contactors_{state}" in BY_CODE


def test_codes_fit_the_event_payload() -> None:
    for e in EVENT_CODES:
        assert re.fullmatch(r"[a-z0-9_]{1,64}", e.code), e.code
