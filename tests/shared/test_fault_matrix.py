"""The committed fault-injection matrix is a full fault x state grid and covers the code table:
every fault kind has, in every operating state, a row or a reason in `NOT_APPLICABLE` (never
both); every protection code is raised by at least one row that reached its safe state, and
every row reached its safe state (but those of `KNOWN_GAPS`, injected, not raised yet); the
docs show the grid of the committed results."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from shared.fault_matrix import (
    FAULT_KINDS,
    KNOWN_GAPS,
    NOT_APPLICABLE,
    OPERATING_STATES,
    MatrixResults,
    OperatingState,
    Reaction,
    RowResult,
    SafeState,
    Status,
    covered_codes,
    grid,
    grid_markdown,
    load,
    matrix_markdown,
    merge,
)
from shared.protection_codes import CODE_TABLE, ProtectionCode

ROOT = Path(__file__).resolve().parents[2]


def committed() -> MatrixResults:
    results = load()
    assert results is not None, "docs/data/fault-matrix.json missing: run make fault-matrix"
    return results


def test_every_code_has_an_ok_row_that_raised_it() -> None:
    results = committed()
    covered = covered_codes(results)
    missing = [s.code.value for s in CODE_TABLE if s.code not in covered]
    assert not missing, f"no ok matrix row raises {missing}"


def test_known_gaps_are_rows_that_still_fail() -> None:
    results = committed()
    assert all(len(why) > 40 for why in KNOWN_GAPS.values())
    ids = {r.id for r in results.rows}
    assert set(KNOWN_GAPS) <= ids, f"known gaps without a row: {set(KNOWN_GAPS) - ids}"
    fixed = [r.id for r in results.rows if r.id in KNOWN_GAPS and r.status == "ok"]
    assert not fixed, f"these rows pass now, drop them from KNOWN_GAPS: {fixed}"


def test_every_fault_kind_in_every_state_has_a_row_or_a_reason() -> None:
    cells = grid(committed())
    for kind in FAULT_KINDS:
        for state in OPERATING_STATES:
            row, why = cells.get((kind, state)), NOT_APPLICABLE.get((kind, state))
            assert (row is None) != (why is None), (kind, state, row, why)
    assert {k for k, _ in cells} <= set(FAULT_KINDS), "rows of unknown fault kinds"
    assert {k for k, _ in NOT_APPLICABLE} <= set(FAULT_KINDS)
    assert all(len(why) > 40 for why in NOT_APPLICABLE.values())
    for (kind, state), row in cells.items():
        assert row.id == f"{kind}/{state}", row.id


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fault_matrix_bench",
                                                  ROOT / "bench" / "fault_matrix.py")  # fmt: skip
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_bench_runs_the_grid_the_results_hold() -> None:
    b = bench()
    rows = b.rows_of(b.matrix_config())
    assert [r.id for r in rows] == [r.id for r in committed().rows]
    for r in rows:
        assert (r.kind, r.state) not in NOT_APPLICABLE
        assert r.reps >= 1 and (r.reps >= 3 or r.note), f"{r.id}: fewer reps, no note says why"


def test_every_row_reached_its_safe_state() -> None:
    for row in committed().rows:
        if row.id in KNOWN_GAPS:
            continue
        assert row.status == "ok" and row.reached_safe_state, row
        assert row.injected_in_state, row
        assert set(row.expected) & set(row.detected), row
        if row.level == "fault":
            safe = row.safe_state
            assert safe.coils_off and safe.contactors == "fault", row
            assert safe.charge_limit_a == 0.0 and safe.discharge_limit_a == 0.0, row


def _row(status: Status, detected: list[str], kind: str = "open_wire",
         state: OperatingState = "standby", duration_s: float = 1.0,
         reaction_s: float | None = None) -> RowResult:  # fmt: skip
    none = Reaction(n=0, p50_s=None, p99_s=None, max_s=None)
    reaction = none if reaction_s is None else Reaction(
        n=3, p50_s=reaction_s, p99_s=reaction_s, max_s=reaction_s)  # fmt: skip
    return RowResult(
        id=f"{kind}/{state}", kind=kind, fault="open_wire", state=state,
        expected=[ProtectionCode.OPEN_WIRE], level="fault", onset="injection",
        configured_delay_s=None, repetitions=1, detected=detected, detected_level=None,
        reaction=reaction, detection=none,
        safe_state=SafeState(coils_off=True, contactors="fault", charge_limit_a=0.0,
                             discharge_limit_a=0.0),
        reached_safe_state=status == "ok", injected_in_state=True, status=status,
        duration_s=duration_s,
    )  # fmt: skip


def test_only_ok_rows_cover_their_expected_codes() -> None:
    results = MatrixResults(command="c", setup="s", duration_s=1.0, rows=[
        _row("unsafe", ["open_wire"]), _row("ok", ["sensor_fault"], state="charging")])  # fmt: skip
    assert covered_codes(results) == set()
    results.rows.append(_row("ok", ["open_wire"], state="closed_idle"))
    assert covered_codes(results) == {"open_wire"}


def test_the_markdown_lists_every_row_and_every_reason() -> None:
    results = committed()
    text = matrix_markdown(results)
    assert text == matrix_markdown(results)
    for row in results.rows:
        assert f"`{row.fault}` | {row.state.replace('_', ' ')} |" in text
    assert "No results committed yet." in matrix_markdown(None)


def test_the_docs_show_the_grid_of_the_committed_results() -> None:
    results = committed()
    shown = "\n".join(grid_markdown(results))
    assert shown in (ROOT / "docs" / "fault-matrix.md").read_text()
    assert "**missing**" not in shown
    body = [line for line in shown.splitlines() if line.startswith("| `")]
    assert len(body) == len(FAULT_KINDS)
    assert all(line.count(" | ") == len(OPERATING_STATES) for line in body)


def test_the_grid_shows_each_cell_or_its_numbered_reason() -> None:
    results = MatrixResults(command="c", setup="s", duration_s=1.0, rows=[
        _row("ok", ["open_wire"], kind="chg_oc", state="charging", reaction_s=0.25),
        _row("not_detected", [], kind="chg_oc", state="closed_idle")])  # fmt: skip
    lines = grid_markdown(results)
    line = next(x for x in lines if x.startswith("| `chg_oc`"))
    cells = line.split(" | ")[1:]
    # chg_oc is the first kind with n/a cells: its two reasons are numbered 1 and 2
    assert cells[:3] == ["n/a [1]", "n/a [2]", "not detected"]
    assert cells[3] == "ok, 250 ms" and cells[4] == "**missing** |"
    assert "1. " + NOT_APPLICABLE[("chg_oc", "standby")] + "." in lines
    assert "2. " + NOT_APPLICABLE[("chg_oc", "precharge")] + "." in lines
    reasons = [x for x in lines if x[:1].isdigit()]
    assert len(reasons) == len(set(NOT_APPLICABLE.values()))
    assert all(why in "\n".join(reasons) for why in NOT_APPLICABLE.values())


def test_two_rows_in_one_cell_are_refused() -> None:
    rows = [_row("ok", ["open_wire"]), _row("ok", ["open_wire"])]
    results = MatrixResults(command="c", setup="s", duration_s=1.0, rows=rows)
    with pytest.raises(ValueError, match="two rows"):
        grid(results)


def test_a_merge_replaces_rows_and_keeps_the_grid_order() -> None:
    old = MatrixResults(command="c", setup="s", duration_s=100.0, rows=[
        _row("ok", ["open_wire"], state="standby", duration_s=10.0),
        _row("not_detected", [], state="charging", duration_s=20.0)])  # fmt: skip
    new = MatrixResults(command="c", setup="s", duration_s=7.0, rows=[
        _row("ok", ["open_wire"], state="charging", duration_s=5.0),
        _row("ok", ["open_wire"], state="precharge", duration_s=2.0)])  # fmt: skip
    merged = merge(old, new)
    assert [r.id for r in merged.rows] == [
        "open_wire/standby",
        "open_wire/precharge",
        "open_wire/charging",
    ]
    assert [r.status for r in merged.rows] == ["ok", "ok", "ok"]
    assert merged.duration_s == 100.0 - 20.0 + 5.0 + 2.0
