"""The shared event store's retention (`Store.prune_events`) on a real SQLite file."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.event_store import Store
from shared.messages import Event


def _add(store: Store, ts: float) -> int:
    return store.add_event(Event(level="info", kind="info", code="e"), ts=ts, source="s")


@settings(max_examples=40, deadline=None)
@given(
    stamps=st.lists(st.integers(0, 100), max_size=30),
    before=st.none() | st.integers(0, 110),
    keep=st.none() | st.integers(0, 40),
)
# found by this property in CI: the newest id, asked in a subquery of the DELETE, was read
# after the old row went, and one row too many stayed
@example(stamps=[1, 0], before=1, keep=1)
def test_pruning_keeps_exactly_the_young_and_newest_rows_and_ids_never_repeat(
    stamps: list[int], before: int | None, keep: int | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "log.sqlite")
        ids = [_add(store, float(ts)) for ts in stamps]
        gone = store.prune_events(
            before_ts=None if before is None else float(before), keep_rows=keep
        )
        expected = [
            i
            for i, ts in zip(ids, stamps, strict=True)
            if (before is None or ts >= before) and (keep is None or i > len(ids) - keep)
        ]
        kept = [r["id"] for r in store.events(after_id=-1, limit=1000)]
        assert kept == expected
        assert gone == len(ids) - len(expected)
        # the count goes on past what was pruned: a consumer's after_id stays meaningful
        assert _add(store, 200.0) == len(ids) + 1
        store.close()


def test_pruning_survives_a_reopen_and_nothing_asked_prunes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "log.sqlite"
    store = Store(db)
    for ts in range(10):
        _add(store, float(ts))
    assert store.prune_events() == 0
    assert store.prune_events(keep_rows=4) == 6
    store.close()
    again = Store(db)
    assert [r["id"] for r in again.events(limit=100)] == [10, 9, 8, 7]
    assert _add(again, 11.0) == 11
    again.close()
