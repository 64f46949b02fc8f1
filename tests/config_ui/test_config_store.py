"""The versioned configuration store on real SQLite files."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.config_ui.config_store import (
    ConfigImportError,
    ConfigStore,
    StoredConfigError,
    parse_import,
)
from services.config_ui.users import UserStore
from shared.config import SystemConfig, demo_config


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _lfp() -> SystemConfig:
    return SystemConfig.from_preset("LFP", modules=2, cells_per_module=8)


def _renamed(config: SystemConfig, name: str) -> SystemConfig:
    return SystemConfig.model_validate({**config.model_dump(mode="json"), "name": name})


def _content(config: SystemConfig) -> dict[str, Any]:
    dump = config.model_dump(mode="json")
    dump.pop("config_version")
    return dump


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ui.sqlite"


@pytest.fixture
def store(db: Path) -> Iterator[ConfigStore]:
    s = ConfigStore(db, clock=FakeClock())
    yield s
    s.close()


def test_empty_store(store: ConfigStore) -> None:
    assert store.latest() is None
    assert store.count() == 0
    assert store.history() == []
    with pytest.raises(KeyError):
        store.get(1)
    with pytest.raises(KeyError):
        store.export_json()


def test_versions_are_numbered_and_carry_their_number(store: ConfigStore) -> None:
    first = store.save(demo_config(), user="alice", source="wizard", comment="first")
    second = store.save(_lfp(), user="bob", source="api")
    assert (first.version, second.version) == (1, 2)
    assert first.config.config_version == 1
    assert second.config.config_version == 2
    assert (first.based_on, second.based_on) == (None, 1)
    assert (second.user, second.source, second.comment) == ("bob", "api", "")
    assert second.created_ts > first.created_ts
    latest = store.latest()
    assert latest == second
    assert store.get(1) == first
    assert store.count() == 2


def test_numbering_ignores_the_incoming_config_version(store: ConfigStore) -> None:
    high = SystemConfig.model_validate({**demo_config().model_dump(), "config_version": 40})
    assert store.save(high, user="alice", source="api").version == 1


def test_adopted_keeps_a_higher_running_number(store: ConfigStore) -> None:
    running = SystemConfig.model_validate({**demo_config().model_dump(), "config_version": 7})
    adopted = store.save(running, user="system", source="adopted")
    assert adopted.version == 7
    assert adopted.config.config_version == 7
    assert store.save(_lfp(), user="alice", source="api").version == 8
    # a lower number cannot be reused
    old = SystemConfig.model_validate({**demo_config().model_dump(), "config_version": 3})
    assert store.save(old, user="system", source="adopted").version == 9


def test_unchanged_content_is_refused_except_when_adopted_or_seeded(store: ConfigStore) -> None:
    store.save(demo_config(), user="alice", source="seed")
    with pytest.raises(ValueError, match="no change"):
        store.save(demo_config(), user="alice", source="api")
    again = SystemConfig.model_validate({**demo_config().model_dump(), "config_version": 9})
    with pytest.raises(ValueError, match="no change"):
        store.save(again, user="alice", source="wizard")
    assert store.save(demo_config(), user="system", source="adopted").version == 2
    assert store.save(demo_config(), user="system", source="seed").version == 3
    assert store.count() == 3


def test_bad_user_or_source_is_refused(store: ConfigStore) -> None:
    with pytest.raises(ValueError, match="user"):
        store.save(demo_config(), user=" ", source="api")
    with pytest.raises(ValueError, match="unknown source"):
        store.save(demo_config(), user="alice", source="magic")  # type: ignore[arg-type]
    assert store.count() == 0


def test_history_is_newest_first_and_pages(store: ConfigStore) -> None:
    for i in range(5):
        store.save(_renamed(demo_config(), f"v{i}"), user="alice", source="api")
    assert [v.version for v in store.history()] == [5, 4, 3, 2, 1]
    assert [v.version for v in store.history(limit=2)] == [5, 4]
    assert [v.version for v in store.history(limit=2, offset=3)] == [2, 1]
    assert [v.config.name for v in store.history(limit=1)] == ["v4"]


def test_rollback_copies_old_content_and_records_the_user(store: ConfigStore) -> None:
    store.save(demo_config(), user="alice", source="wizard")
    store.save(_lfp(), user="alice", source="api")
    back = store.rollback(1, user="bob", comment="LFP was wrong")
    assert back.version == 3
    assert (back.user, back.source, back.comment, back.based_on) == (
        "bob",
        "rollback",
        "LFP was wrong",
        1,
    )
    assert _content(back.config) == _content(store.get(1).config)
    assert back.config.config_version == 3
    assert store.diff(1, 3) == []
    assert store.latest() == back


def test_rollback_errors(store: ConfigStore) -> None:
    store.save(demo_config(), user="alice", source="wizard")
    with pytest.raises(KeyError):
        store.rollback(5, user="bob")
    with pytest.raises(ValueError, match="no change"):
        store.rollback(1, user="bob")


def test_diff_between_versions(store: ConfigStore) -> None:
    store.save(demo_config(), user="alice", source="wizard")
    dump = demo_config().model_dump(mode="json")
    dump["protection"]["cell_overvoltage"]["warning"]["threshold"] = 4.12
    store.save(SystemConfig.model_validate(dump), user="alice", source="api")
    entries = store.diff(1, 2)
    assert [(e.path, e.old, e.new, e.change) for e in entries] == [
        ("protection.cell_overvoltage.warning.threshold", 4.15, 4.12, "changed")
    ]
    assert [(e.old, e.new) for e in store.diff(2, 1)] == [(4.12, 4.15)]
    with pytest.raises(KeyError):
        store.diff(1, 9)


def test_export_import_round_trip_into_a_fresh_file(store: ConfigStore, tmp_path: Path) -> None:
    store.save(demo_config(), user="alice", source="wizard")
    store.save(_lfp(), user="alice", source="api", comment="smaller")
    exported = store.export_json()
    assert exported["format"] == "bms-config"
    assert exported["format_version"] == 1
    assert (exported["version"], exported["user"], exported["comment"]) == (2, "alice", "smaller")
    assert isinstance(exported["exported_ts"], float)
    # through real JSON text, as a downloaded file would go
    text = json.dumps(exported)
    assert store.export_json(1)["config"]["chemistry"] == "NMC"

    with ConfigStore(tmp_path / "other.sqlite") as fresh:
        imported = fresh.import_json(json.loads(text), user="carol", comment="from site A")
        assert imported.version == 1
        assert (imported.user, imported.source, imported.comment) == (
            "carol",
            "import",
            "from site A",
        )
        assert _content(imported.config) == _content(_lfp())
        # JSON text and a bare configuration dict are accepted too
        again = fresh.import_json(store.export_json(1)["config"], user="carol")
        assert again.version == 2
        assert _content(again.config) == _content(demo_config())
        assert fresh.import_json(text, user="carol").version == 3


def _import_lines(store: ConfigStore, data: Any) -> list[str]:
    with pytest.raises(ConfigImportError) as info:
        store.import_json(data, user="carol")
    assert all(isinstance(line, str) and line and "\n" not in line for line in info.value.lines)
    return info.value.lines


def test_import_errors_are_readable_lines(store: ConfigStore) -> None:
    assert _import_lines(store, [1, 2]) == [
        "expected a JSON object (an exported configuration), got a list"
    ]
    assert "not valid JSON" in _import_lines(store, "{not json")[0]
    lines = _import_lines(store, {"format": "other", "format_version": 7, "config": []})
    assert lines == [
        "format: expected 'bms-config', got 'other'",
        "format_version: 7 is not supported; this software reads format_version 1",
        "config: expected a JSON object, got a list",
    ]
    assert _import_lines(store, {"format": "bms-config", "format_version": 1}) == [
        "config: missing"
    ]
    assert store.count() == 0


def test_import_of_invalid_thresholds_names_the_fields(store: ConfigStore) -> None:
    exported_like: dict[str, Any] = {
        "format": "bms-config",
        "format_version": 1,
        "config": demo_config().model_dump(mode="json"),
    }
    cfg = exported_like["config"]
    cfg["protection"]["cell_overvoltage"]["fault"]["threshold"] = 4.3
    cfg["cell_capacity_ah"] = -5
    cfg["colour"] = "blue"
    lines = _import_lines(store, exported_like)
    assert any(line.startswith("cell_capacity_ah: must be greater than 0") for line in lines)
    assert any(line.startswith("colour: unknown setting") for line in lines)
    assert store.count() == 0

    cfg["cell_capacity_ah"] = 100.0
    del cfg["colour"]
    lines = _import_lines(store, exported_like)
    assert lines == [
        "protection.cell_overvoltage: the fault threshold 4.30 V is above the absolute limit "
        "4.25 V of the NMC cell; raise chemistry_overrides.ov_limit_v only if the cell "
        "datasheet allows it"
    ]
    assert store.count() == 0


def test_importing_the_running_content_is_an_import_error(store: ConfigStore) -> None:
    store.save(demo_config(), user="alice", source="wizard")
    with pytest.raises(ConfigImportError, match="no change"):
        store.import_json(store.export_json(), user="bob")


def test_parse_import_accepts_bytes() -> None:
    data = json.dumps(demo_config().model_dump(mode="json")).encode()
    assert parse_import(data) == demo_config()
    with pytest.raises(ConfigImportError, match="UTF-8"):
        parse_import(b"\xff\xfe")


def test_store_survives_reopening(db: Path) -> None:
    with ConfigStore(db) as first:
        first.save(demo_config(), user="alice", source="wizard", comment="one")
        first.save(_lfp(), user="bob", source="api", comment="two")
        before = first.history()
    with ConfigStore(db) as second:
        assert second.history() == before
        latest = second.latest()
        assert latest is not None
        assert (latest.version, latest.user, latest.comment) == (2, "bob", "two")
        assert second.save(demo_config(), user="carol", source="api").version == 3


def test_concurrent_saves_from_threads_get_unique_versions(store: ConfigStore) -> None:
    threads_n, per_thread = 8, 5
    results: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def work(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            try:
                saved = store.save(_renamed(demo_config(), f"t{t}-{i}"), user=f"u{t}", source="api")
                results.append(saved.version)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == list(range(1, threads_n * per_thread + 1))
    assert store.count() == threads_n * per_thread


def test_two_stores_on_one_file_share_the_numbering(db: Path) -> None:
    with ConfigStore(db) as a, ConfigStore(db) as b:
        assert a.save(demo_config(), user="alice", source="api").version == 1
        assert b.save(_lfp(), user="bob", source="api").version == 2
        assert a.latest() == b.latest()


def test_user_store_can_share_the_file(db: Path) -> None:
    with ConfigStore(db) as configs, UserStore(db) as users:
        configs.save(demo_config(), user="alice", source="api")
        assert users.ensure_admin("a long password") == "a long password"
    con = sqlite3.connect(db)
    try:
        versions = dict(con.execute("SELECT component, version FROM schema_versions"))
    finally:
        con.close()
    assert versions == {"config_store": 2, "users": 1}


def _corrupt(db: Path, version: int) -> None:
    con = sqlite3.connect(db)
    try:
        row = con.execute(
            "SELECT config_json FROM config_versions WHERE version = ?", (version,)
        ).fetchone()
        data = json.loads(row[0])
        data["retired_field"] = 1  # what an older model wrote but the current one refuses
        con.execute(
            "UPDATE config_versions SET config_json = ? WHERE version = ?",
            (json.dumps(data), version),
        )
        con.commit()
    finally:
        con.close()


def test_a_version_that_no_longer_validates_does_not_break_history(db: Path) -> None:
    with ConfigStore(db) as store:
        for i in range(3):
            store.save(_renamed(demo_config(), f"v{i}"), user="alice", source="api")
    _corrupt(db, 2)
    with ConfigStore(db) as store:
        assert [v.version for v in store.history()] == [3, 1]
        assert store.count() == 3
        with pytest.raises(StoredConfigError, match="version 2") as info:
            store.get(2)
        assert info.value.lines == ["retired_field: unknown setting (check the spelling)"]
        assert store.invalid_versions() == {2: info.value.lines}
        # the broken version can still be left behind by rolling back past it
        assert store.rollback(1, user="bob").version == 4


def test_latest_refuses_to_fall_back_silently(db: Path) -> None:
    with ConfigStore(db) as store:
        store.save(demo_config(), user="alice", source="api")
        store.save(_lfp(), user="alice", source="api")
    _corrupt(db, 2)
    with ConfigStore(db) as store:
        with pytest.raises(StoredConfigError):
            store.latest()
        # a new configuration can still be saved on top
        assert store.save(demo_config(), user="alice", source="api").version == 3
        latest = store.latest()
        assert latest is not None and latest.version == 3


def test_newer_schema_is_refused(db: Path) -> None:
    ConfigStore(db).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE schema_versions SET version = 99 WHERE component = 'config_store'")
    con.commit()
    con.close()
    with pytest.raises(RuntimeError, match="newer"):
        ConfigStore(db)


def test_database_is_in_wal_mode(db: Path) -> None:
    ConfigStore(db).close()
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()
