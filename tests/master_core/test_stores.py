"""The event log and state store on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from services.master_core.stores import Store
from shared.messages import Event


def test_after_id_pages_forward_oldest_first(tmp_path: Path) -> None:
    """A consumer fills a gap in the master's `seq` (the row id) page by page."""
    store = Store(tmp_path / "log.sqlite")
    ids = [
        store.add_event(Event(level="info", kind="info", code=f"e{i}"), ts=float(i), source="m")
        for i in range(7)
    ]
    assert ids == list(range(1, 8))
    page = store.events(after_id=2, limit=3)
    assert [e["id"] for e in page] == [3, 4, 5]
    assert [e["id"] for e in store.events(after_id=page[-1]["id"], limit=3)] == [6, 7]
    assert store.events(after_id=7) == []
    assert [e["id"] for e in store.events(limit=2)] == [7, 6]  # without it: newest first
    store.add_event(Event(level="info", kind="info", code="x"), ts=9.0, source="other")
    assert [e["source"] for e in store.events(after_id=5, source="m")] == ["m", "m"]
    store.close()


def test_events_persist_and_query_by_level_and_time(tmp_path: Path) -> None:
    db = tmp_path / "demo.sqlite"
    store = Store(db)
    store.add_event(Event(level="info", kind="mode", code="mode_working"), ts=10.0, source="m")
    store.add_event(
        Event(level="fault", kind="raise", code="cell_overvoltage", values={"v": 4.3}),
        ts=11.0,
        source="m",
    )
    store.add_event(
        Event(level="warning", kind="clear", code="cell_imbalance"), ts=12.0, source="m"
    )
    store.close()
    again = Store(db)
    assert [e["code"] for e in again.events()] == [
        "cell_imbalance",
        "cell_overvoltage",
        "mode_working",
    ]
    assert [e["code"] for e in again.events(min_level="alarm")] == ["cell_overvoltage"]
    assert again.events(min_level="alarm")[0]["values"] == {"v": 4.3}
    assert [e["code"] for e in again.events(since_ts=11.5)] == ["cell_imbalance"]
    assert len(again.events(limit=2)) == 2
    assert [e["code"] for e in again.events(until_ts=11.0)] == ["cell_overvoltage", "mode_working"]
    assert [e["code"] for e in again.events(kind="raise")] == ["cell_overvoltage"]
    assert [e["code"] for e in again.events(code="cell_")] == ["cell_imbalance", "cell_overvoltage"]


def test_event_text_filter_ignores_case_and_takes_wildcards_literally(tmp_path: Path) -> None:
    store = Store(tmp_path / "demo.sqlite")
    for i, text in enumerate(("Cell 4 at 4.31 V", "100% SOC", "cell_4 open wire")):
        store.add_event(Event(level="info", kind="info", code="x", text=text), ts=i, source="m")
    assert [e["text"] for e in store.events(text="CELL 4")] == ["Cell 4 at 4.31 V"]
    assert [e["text"] for e in store.events(text="%")] == ["100% SOC"]
    assert [e["text"] for e in store.events(text="l_4")] == ["cell_4 open wire"]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    store = Store(db)
    store.put("soc", {"cells": [50.0, 51.5]}, ts=1.0)
    store.put("soc", {"cells": [49.0, 50.5]}, ts=2.0)
    store.close()
    assert Store(db).get("soc") == {"cells": [49.0, 50.5]}
    assert Store(db).get("missing") is None


def test_a_set_of_records_is_saved_whole_or_not_at_all(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    store = Store(db)
    store.put_many([("soc", {"cells": [50.0]}), ("latches", {"codes": []})], ts=1.0)
    with pytest.raises(TypeError):  # the second value cannot be stored: nothing is
        store.put_many([("soc", {"cells": [40.0]}), ("latches", {"codes": {object()}})], ts=2.0)
    store.put("other", 1, ts=3.0)  # the connection is usable after the failed set
    store.close()
    again = Store(db)
    assert again.get("soc") == {"cells": [50.0]} and again.get("latches") == {"codes": []}
    assert again.get("other") == 1


def test_a_failure_inside_the_transaction_rolls_it_back(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    store = Store(db)
    store.put_many([("a", 1), ("b", 2)], ts=1.0)
    with sqlite3.connect(db) as other:  # a constraint that fails on the second row
        other.execute(
            "CREATE TRIGGER refuse_b BEFORE UPDATE ON state WHEN NEW.key = 'b' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    with pytest.raises(sqlite3.IntegrityError):
        store.put_many([("a", 10), ("b", 20)], ts=2.0)
    assert store.get("a") == 1 and store.get("b") == 2
