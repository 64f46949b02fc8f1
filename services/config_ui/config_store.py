"""Versioned configuration store in SQLite: history, diffs, rollback, JSON export and import.

Every save appends a new version with the user, the source and a comment; nothing is ever
overwritten, so any earlier configuration can be inspected, compared or restored.

Two kinds share the file and the rules, each numbered on its own: the system configuration
(`ConfigStore`, `shared.config.SystemConfig`) and the site configuration (`SiteConfigStore`,
`shared.config.SiteConfig`, kept by the web application of one string of the site).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, cast, get_args

from pydantic import ValidationError

from services.config_ui.config_diff import DiffEntry, config_diff
from shared.config import SiteConfig, SystemConfig, explain_errors

log = logging.getLogger(__name__)

ConfigSource = Literal["wizard", "api", "import", "rollback", "seed", "adopted"]
CONFIG_SOURCES: tuple[str, ...] = get_args(ConfigSource)

EXPORT_FORMAT = "bms-config"
EXPORT_FORMAT_VERSION = 1
SITE_EXPORT_FORMAT = "bms-site-config"

SCHEMA_COMPONENT = "config_store"
SCHEMA_VERSION = 2
# Migration n brings the schema from version n-1 to n; append new steps, never edit old ones.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """
        CREATE TABLE config_versions (
            version     INTEGER PRIMARY KEY,
            created_ts  REAL NOT NULL,
            user        TEXT NOT NULL,
            source      TEXT NOT NULL,
            comment     TEXT NOT NULL DEFAULT '',
            based_on    INTEGER,
            config_json TEXT NOT NULL
        )
        """,
    ),
    2: (
        """
        CREATE TABLE site_config_versions (
            version     INTEGER PRIMARY KEY,
            created_ts  REAL NOT NULL,
            user        TEXT NOT NULL,
            source      TEXT NOT NULL,
            comment     TEXT NOT NULL DEFAULT '',
            based_on    INTEGER,
            config_json TEXT NOT NULL
        )
        """,
    ),
}

C = TypeVar("C", SystemConfig, SiteConfig)
"""A kind of configuration the store keeps (each has its `config_version`)."""


@dataclass(frozen=True)
class StoreKind(Generic[C]):
    """What differs between the kinds: the table, the model, the words and the export format."""

    table: str
    model: type[C]
    what: str
    """How messages name it ("configuration", "site configuration")."""
    export_format: str


SYSTEM_KIND = StoreKind("config_versions", SystemConfig, "configuration", EXPORT_FORMAT)
SITE_KIND = StoreKind("site_config_versions", SiteConfig, "site configuration", SITE_EXPORT_FORMAT)

# Sources that may store content identical to the newest version: adopting a configuration
# already running elsewhere, or seeding an empty store, records a fact rather than an edit.
_DUPLICATE_ALLOWED: frozenset[str] = frozenset({"adopted", "seed"})


@dataclass(frozen=True)
class StoredVersion(Generic[C]):
    version: int
    created_ts: float
    """Unix seconds."""
    user: str
    source: ConfigSource
    comment: str
    config: C
    """Its config_version equals `version`."""
    based_on: int | None
    """Rollback: the version copied; otherwise the newest version when this one was saved."""


ConfigVersion = StoredVersion[SystemConfig]
SiteConfigVersion = StoredVersion[SiteConfig]


class ConfigImportError(ValueError):
    """An import that cannot be used; `lines` says why, one readable problem per line."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = list(lines) or ["the configuration could not be imported"]
        super().__init__("\n".join(self.lines))


class StoredConfigError(ValueError):
    """A stored version no longer validates (the configuration model changed since)."""

    def __init__(self, version: int, lines: list[str]) -> None:
        self.version = version
        self.lines = lines
        super().__init__(
            f"stored configuration version {version} is no longer valid: " + "; ".join(lines)
        )


def open_database(path: Path | str) -> sqlite3.Connection:
    """A connection shared by threads (callers serialise access), in WAL mode."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # autocommit: transactions are opened explicitly with BEGIN IMMEDIATE, so two processes
    # on one file cannot both read the same highest version before inserting
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migrate(
    conn: sqlite3.Connection, component: str, migrations: dict[int, tuple[str, ...]]
) -> None:
    """Bring `component`'s tables to the newest schema; several components may share a file."""
    latest = max(migrations)
    with transaction(conn):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions ("
            "component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (component,)
        ).fetchone()
        current = 0 if row is None else int(row[0])
        if current > latest:
            raise RuntimeError(
                f"the {component} tables are at schema version {current}, newer than this "
                f"software ({latest}); use a newer version or another database file"
            )
        for step in range(current + 1, latest + 1):
            for statement in migrations[step]:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_versions (component, version) VALUES (?, ?) "
            "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            (component, latest),
        )


def _content(config: SystemConfig | SiteConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


class VersionStore(Generic[C]):
    """Append-only configuration versions of one kind in one SQLite file; safe to call from
    threads.

    `save` refuses content identical to the newest version (ignoring config_version) with a
    ValueError, except for the sources "adopted" and "seed"; so does `rollback` to a version
    whose content is the newest one's.
    """

    def __init__(
        self, path: Path | str, kind: StoreKind[C], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.kind: StoreKind[C] = kind
        self._clock = clock
        self._lock = threading.Lock()
        self._conn = open_database(path)
        try:
            migrate(self._conn, SCHEMA_COMPONENT, _MIGRATIONS)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> VersionStore[C]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------

    def _parse(self, row: sqlite3.Row) -> StoredVersion[C]:
        version = int(row["version"])
        try:
            config = self.kind.model.model_validate_json(row["config_json"])
        except ValidationError as exc:
            raise StoredConfigError(version, explain_errors(exc)) from exc
        if row["source"] not in CONFIG_SOURCES:
            raise StoredConfigError(version, [f"source: unknown source {row['source']!r}"])
        return StoredVersion(
            version=version,
            created_ts=float(row["created_ts"]),
            user=str(row["user"]),
            source=row["source"],
            comment=str(row["comment"]),
            config=config,
            based_on=None if row["based_on"] is None else int(row["based_on"]),
        )

    def _row(self, version: int) -> sqlite3.Row:
        row: sqlite3.Row | None = self._conn.execute(
            f"SELECT * FROM {self.kind.table} WHERE version = ?", (version,)
        ).fetchone()
        if row is None:
            raise KeyError(f"{self.kind.what} version {version} does not exist")
        return row

    def _max_version(self) -> int | None:
        row = self._conn.execute(f"SELECT MAX(version) FROM {self.kind.table}").fetchone()
        return None if row[0] is None else int(row[0])

    def latest(self) -> StoredVersion[C] | None:
        """The newest version, the one to run; None when the store is empty.

        Raises StoredConfigError when the newest version no longer validates: running an
        older one instead would be a silent change.
        """
        with self._lock:
            newest = self._max_version()
            return None if newest is None else self._parse(self._row(newest))

    def get(self, version: int) -> StoredVersion[C]:
        """KeyError when there is no such version; StoredConfigError when it fails to load."""
        with self._lock:
            return self._parse(self._row(version))

    def history(self, limit: int = 100, offset: int = 0) -> list[StoredVersion[C]]:
        """Newest first. Versions that no longer validate are left out (see `invalid_versions`),
        so a page may hold fewer than `limit` entries."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM {self.kind.table} ORDER BY version DESC LIMIT ? OFFSET ?",
                (max(0, limit), max(0, offset)),
            ).fetchall()
        out: list[StoredVersion[C]] = []
        for row in rows:
            try:
                out.append(self._parse(row))
            except StoredConfigError as exc:
                log.warning("%s", exc)
        return out

    def invalid_versions(self) -> dict[int, list[str]]:
        """Stored versions that no longer validate, with the problems of each."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM {self.kind.table} ORDER BY version"
            ).fetchall()
        out: dict[int, list[str]] = {}
        for row in rows:
            try:
                self._parse(row)
            except StoredConfigError as exc:
                out[exc.version] = exc.lines
        return out

    def count(self) -> int:
        """Stored versions, including any that no longer validate."""
        with self._lock:
            row = self._conn.execute(f"SELECT COUNT(*) FROM {self.kind.table}").fetchone()
            return int(row[0])

    # -- writing ---------------------------------------------------------------------------

    def save(
        self,
        config: C,
        *,
        user: str,
        source: ConfigSource,
        comment: str = "",
    ) -> StoredVersion[C]:
        """Store `config` as a new version, numbered one above the newest.

        "adopted" keeps the configuration's own config_version when that is higher (it is
        already running under that number). ValueError when the content equals the newest
        version's, unless the source is "adopted" or "seed".
        """
        return self._save(config, user=user, source=source, comment=comment, rollback_of=None)

    def rollback(self, version: int, *, user: str, comment: str = "") -> StoredVersion[C]:
        """A new version with the content of `version`; KeyError when it does not exist."""
        old = self.get(version)
        return self._save(
            old.config, user=user, source="rollback", comment=comment, rollback_of=version
        )

    def _save(
        self,
        config: C,
        *,
        user: str,
        source: str,
        comment: str,
        rollback_of: int | None,
    ) -> StoredVersion[C]:
        if source not in CONFIG_SOURCES:
            raise ValueError(f"unknown source {source!r}; use one of {', '.join(CONFIG_SOURCES)}")
        if not user.strip():
            raise ValueError(f"a {self.kind.what} change needs the user who made it")
        content = _content(config)
        with self._lock, transaction(self._conn):
            newest = self._max_version()
            if newest is not None and source not in _DUPLICATE_ALLOWED:
                self._refuse_unchanged(newest, content)
            number = (newest or 0) + 1
            if source == "adopted":
                number = max(number, config.config_version)
            stored = self.kind.model.model_validate({**content, "config_version": number})
            created_ts = self._clock()
            based_on = rollback_of if rollback_of is not None else newest
            self._conn.execute(
                f"INSERT INTO {self.kind.table} "
                "(version, created_ts, user, source, comment, based_on, config_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    number,
                    created_ts,
                    user,
                    source,
                    comment,
                    based_on,
                    json.dumps(_content(stored), allow_nan=False, separators=(",", ":")),
                ),
            )
        return StoredVersion(
            version=number,
            created_ts=created_ts,
            user=user,
            source=cast(ConfigSource, source),  # checked against CONFIG_SOURCES above
            comment=comment,
            config=stored,
            based_on=based_on,
        )

    def _refuse_unchanged(self, newest: int, content: dict[str, Any]) -> None:
        try:
            current = _content(self._parse(self._row(newest)).config)
        except StoredConfigError:
            return  # anything valid differs from a version that no longer loads
        if not config_diff(current, content):
            raise ValueError(
                f"no change: the {self.kind.what} equals version {newest}; nothing to save"
            )

    # -- comparing, export and import ------------------------------------------------------

    def diff(self, from_version: int, to_version: int) -> list[DiffEntry]:
        """What changed from one version to another (KeyError when either does not exist)."""
        old = self.get(from_version)
        new = self.get(to_version)
        return config_diff(_content(old.config), _content(new.config))

    def export_json(self, version: int | None = None) -> dict[str, Any]:
        """A JSON-ready document of one version (the newest when None); KeyError when none."""
        if version is None:
            entry = self.latest()
            if entry is None:
                raise KeyError(f"no {self.kind.what} is stored yet; nothing to export")
        else:
            entry = self.get(version)
        return {
            "format": self.kind.export_format,
            "format_version": EXPORT_FORMAT_VERSION,
            "exported_ts": self._clock(),
            "version": entry.version,
            "created_ts": entry.created_ts,
            "user": entry.user,
            "source": entry.source,
            "comment": entry.comment,
            "based_on": entry.based_on,
            "config": _content(entry.config),
        }

    def import_json(self, data: Any, *, user: str, comment: str = "") -> StoredVersion[C]:
        """Save an exported document, or a bare configuration dict, as a new version.

        `data` may also be JSON text. ConfigImportError, one readable line per problem, when
        it is not usable or its content equals the newest version.
        """
        try:
            config = self.kind.model.model_validate(unwrap_import(data, self.kind.export_format))
        except ValidationError as exc:
            raise ConfigImportError(explain_errors(exc)) from exc
        try:
            return self.save(config, user=user, source="import", comment=comment)
        except ConfigImportError:
            raise
        except ValueError as exc:
            raise ConfigImportError([str(exc)]) from exc


class ConfigStore(VersionStore[SystemConfig]):
    """The system configuration's versions."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(path, SYSTEM_KIND, clock=clock)


class SiteConfigStore(VersionStore[SiteConfig]):
    """The site configuration's versions (in the same file as the system's, numbered apart)."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(path, SITE_KIND, clock=clock)


def parse_import(data: Any) -> SystemConfig:
    """The configuration in an export document, a bare configuration dict or JSON text of
    either; ConfigImportError with one line per problem otherwise."""
    try:
        return SystemConfig.model_validate(unwrap_import(data))
    except ValidationError as exc:
        raise ConfigImportError(explain_errors(exc)) from exc


def unwrap_import(data: Any, export_format: str = EXPORT_FORMAT) -> dict[str, Any]:
    """The configuration object in an export document (its format and version checked), a
    bare configuration dict or JSON text of either, not yet validated; ConfigImportError with
    one line per problem otherwise."""
    if isinstance(data, bytes | bytearray):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigImportError([f"the file is not UTF-8 text: {exc.reason}"]) from exc
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ConfigImportError(
                [f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]
            ) from exc
    if not isinstance(data, dict):
        raise ConfigImportError(
            [f"expected a JSON object (an exported configuration), got {_json_type(data)}"]
        )
    body: Any = data
    if "format" in data or "config" in data:
        problems: list[str] = []
        fmt = data.get("format")
        if fmt != export_format:
            problems.append(
                f"format: expected {export_format!r}, got {fmt!r}"
                if "format" in data
                else f"format: missing; an exported configuration has format {export_format!r}"
            )
        fmt_version = data.get("format_version", EXPORT_FORMAT_VERSION)
        if type(fmt_version) is not int or not 1 <= fmt_version <= EXPORT_FORMAT_VERSION:
            problems.append(
                f"format_version: {fmt_version!r} is not supported; this software reads "
                f"format_version {EXPORT_FORMAT_VERSION}"
            )
        body = data.get("config")
        if not isinstance(body, dict):
            problems.append(
                "config: missing"
                if "config" not in data
                else f"config: expected a JSON object, got {_json_type(body)}"
            )
        if problems:
            raise ConfigImportError(problems)
    return dict(body)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__
