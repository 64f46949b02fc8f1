"""The site configuration, a second kind in the versioned store: numbered apart from the
system's, with the same history, diff, rollback, export and import; the schema migration
that adds it leaves a file of the first schema as it was."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from services.config_ui.config_store import (
    _MIGRATIONS,
    SCHEMA_COMPONENT,
    SITE_EXPORT_FORMAT,
    ConfigImportError,
    ConfigStore,
    SiteConfigStore,
    migrate,
    open_database,
)
from shared.config import SiteConfig, demo_config


def site(*systems: str, **extra: Any) -> SiteConfig:
    return SiteConfig.model_validate(
        {"site": "site1", "strings": [{"system": s} for s in systems], **extra}
    )


def test_site_versions_are_numbered_apart_from_the_system_ones(tmp_path: Path) -> None:
    db = tmp_path / "ui.sqlite"
    with ConfigStore(db) as systems, SiteConfigStore(db) as sites:
        assert systems.save(demo_config(), user="a", source="api").version == 1
        assert (
            systems.save(
                demo_config().model_copy(update={"name": "x"}), user="a", source="api"
            ).version
            == 2
        )
        first = sites.save(site("s1", "s2"), user="a", source="api", comment="two")
        assert first.version == 1 and first.config.config_version == 1
        second = sites.save(site("s1", "s2", "s3"), user="b", source="api")
        assert second.version == 2 and second.based_on == 1
        assert second.config.system_ids == ("s1", "s2", "s3")
        assert systems.count() == 2 and sites.count() == 2
        latest = sites.latest()
        assert latest is not None and latest.config.system_ids == ("s1", "s2", "s3")


def test_an_unchanged_site_configuration_is_refused_except_seed_and_adopted(
    tmp_path: Path,
) -> None:
    with SiteConfigStore(tmp_path / "ui.sqlite") as sites:
        sites.save(site("s1"), user="a", source="api")
        with pytest.raises(ValueError, match="site configuration equals version 1"):
            sites.save(site("s1"), user="a", source="api")
        assert sites.save(site("s1"), user="system", source="seed").version == 2


def test_adopted_keeps_the_running_version(tmp_path: Path) -> None:
    with SiteConfigStore(tmp_path / "ui.sqlite") as sites:
        running = site("s1", "s2", config_version=7)
        assert sites.save(running, user="system", source="adopted").version == 7


def test_diff_rollback_and_export_import(tmp_path: Path) -> None:
    with SiteConfigStore(tmp_path / "ui.sqlite") as sites:
        sites.save(site("s1", "s2"), user="a", source="api")
        sites.save(site("s1", "s2", join_window_v=3.0), user="a", source="api")
        changes = {e.path: (e.old, e.new) for e in sites.diff(1, 2)}
        assert changes == {"join_window_v": (2.0, 3.0)}
        back = sites.rollback(1, user="b")
        assert back.version == 3 and back.based_on == 1 and back.config.join_window_v == 2.0
        exported = sites.export_json(2)
        assert exported["format"] == SITE_EXPORT_FORMAT and exported["version"] == 2
        imported = sites.import_json(json.dumps(exported), user="c")
        assert imported.version == 4 and imported.config.join_window_v == 3.0
        system_file = {"format": "bms-config", "format_version": 1, "config": {}}
        with pytest.raises(ConfigImportError, match="expected 'bms-site-config'"):
            sites.import_json(system_file, user="c")
        with pytest.raises(ConfigImportError, match="strings"):
            sites.import_json({"site": "site1", "strings": []}, user="c")


def test_migration_2_adds_the_site_kind_to_a_file_of_schema_1(tmp_path: Path) -> None:
    db = tmp_path / "ui.sqlite"
    conn = open_database(db)
    migrate(conn, SCHEMA_COMPONENT, {1: _MIGRATIONS[1]})  # a file as the first release left it
    conn.close()
    with ConfigStore(db) as old:
        assert old.count() == 0
    raw = sqlite3.connect(db)
    try:
        raw.execute("UPDATE schema_versions SET version = 1 WHERE component = 'config_store'")
        raw.execute("DROP TABLE site_config_versions")
        raw.execute(
            "INSERT INTO config_versions (version, created_ts, user, source, config_json) "
            "VALUES (1, 1.0, 'a', 'api', ?)",
            (demo_config().model_dump_json(),),
        )
        raw.commit()
    finally:
        raw.close()
    with ConfigStore(db) as systems, SiteConfigStore(db) as sites:
        assert systems.count() == 1  # the system's versions untouched
        assert sites.count() == 0
        assert sites.save(site("s1"), user="a", source="api").version == 1
    raw = sqlite3.connect(db)
    try:
        version = raw.execute(
            "SELECT version FROM schema_versions WHERE component = 'config_store'"
        ).fetchone()[0]
    finally:
        raw.close()
    assert version == max(_MIGRATIONS) == 2
