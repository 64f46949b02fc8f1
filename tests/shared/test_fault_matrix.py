"""The committed fault-injection matrix covers the code table: every protection code is raised
by at least one row that reached its safe state, or says why not: in `NOT_REACHABLE` (no
injection reaches it) or through a row of `KNOWN_GAPS` (injected, not raised yet)."""

from __future__ import annotations

from shared.fault_matrix import (
    KNOWN_GAPS,
    NOT_REACHABLE,
    MatrixResults,
    Reaction,
    RowResult,
    SafeState,
    Status,
    covered_codes,
    load,
    matrix_markdown,
)
from shared.protection_codes import CODE_TABLE, ProtectionCode


def committed() -> MatrixResults:
    results = load()
    assert results is not None, "docs/data/fault-matrix.json missing: run make fault-matrix"
    return results


def test_every_code_has_a_row_or_a_reason() -> None:
    results = committed()
    covered = covered_codes(results)
    gaps = {c for r in results.rows if r.id in KNOWN_GAPS for c in r.expected}
    missing = [s.code.value for s in CODE_TABLE if s.code not in covered]
    unexplained = [c for c in missing if ProtectionCode(c) not in NOT_REACHABLE and c not in gaps]
    assert not unexplained, f"no matrix row and no reason in NOT_REACHABLE: {unexplained}"


def test_no_reason_is_kept_for_a_code_the_matrix_reaches() -> None:
    results = committed()
    stale = sorted(set(NOT_REACHABLE) & covered_codes(results))
    assert not stale, f"reached by the matrix, drop from NOT_REACHABLE: {stale}"
    assert all(len(why) > 40 for why in [*NOT_REACHABLE.values(), *KNOWN_GAPS.values()])
    ids = {r.id for r in results.rows}
    assert set(KNOWN_GAPS) <= ids, f"known gaps without a row: {set(KNOWN_GAPS) - ids}"
    fixed = [r.id for r in results.rows if r.id in KNOWN_GAPS and r.status == "ok"]
    assert not fixed, f"these rows pass now, drop them from KNOWN_GAPS: {fixed}"


def test_every_row_reached_its_safe_state() -> None:
    for row in committed().rows:
        if row.id in KNOWN_GAPS:
            continue
        assert row.status == "ok" and row.reached_safe_state, row
        assert set(row.expected) & set(row.detected), row
        if row.level == "fault":
            safe = row.safe_state
            assert safe.coils_off and safe.contactors == "fault", row
            assert safe.charge_limit_a == 0.0 and safe.discharge_limit_a == 0.0, row


def _row(status: Status, detected: list[str]) -> RowResult:
    none = Reaction(n=0, p50_s=None, p99_s=None, max_s=None)
    return RowResult(
        id="x", fault="open_wire", state="standby", expected=[ProtectionCode.OPEN_WIRE],
        level="fault", onset="injection", configured_delay_s=None, repetitions=1,
        detected=detected, detected_level=None, reaction=none, detection=none,
        safe_state=SafeState(coils_off=True, contactors="fault", charge_limit_a=0.0,
                             discharge_limit_a=0.0),
        reached_safe_state=status == "ok", status=status,
    )  # fmt: skip


def test_only_ok_rows_cover_their_expected_codes() -> None:
    results = MatrixResults(command="c", setup="s", duration_s=1.0, rows=[
        _row("unsafe", ["open_wire"]), _row("ok", ["sensor_fault"])])  # fmt: skip
    assert covered_codes(results) == set()
    results.rows.append(_row("ok", ["open_wire"]))
    assert covered_codes(results) == {"open_wire"}


def test_the_markdown_lists_every_row_and_every_reason() -> None:
    results = committed()
    text = matrix_markdown(results)
    assert text == matrix_markdown(results)
    for row in results.rows:
        assert f"`{row.fault}` | {row.state.replace('_', ' ')} |" in text
    for code in NOT_REACHABLE:
        assert f"| `{code}` |" in text
    assert "No results committed yet." in matrix_markdown(None)
