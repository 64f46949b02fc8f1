"""SQLite persistence of a service's event log, with a small key-value state store and the
command journal: the master's (its events, SOC, latches, commands) and the site controller's
(its events). One file per service and system; `services.master_core.stores` names it too."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from shared.command_ledger import REMEMBER_S, JournalEntry
from shared.messages import CommandReply, Event

LEVELS = ("info", "warning", "alarm", "fault")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    level TEXT NOT NULL,
    level_rank INTEGER NOT NULL,
    kind TEXT NOT NULL,
    code TEXT NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    values_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS source_events (
    source TEXT NOT NULL,
    seq_epoch REAL NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    level TEXT NOT NULL,
    kind TEXT NOT NULL,
    code TEXT NOT NULL,
    text TEXT NOT NULL,
    values_json TEXT NOT NULL,
    PRIMARY KEY (source, seq_epoch, seq)
);
CREATE INDEX IF NOT EXISTS source_events_ts ON source_events (ts);
CREATE TABLE IF NOT EXISTS commands (
    correlation_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    reply_json TEXT NOT NULL,
    forget_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value_json TEXT NOT NULL,
    updated_ts REAL NOT NULL
);
"""


class Store:
    """One SQLite file per system; WAL so readers never block the 10 Hz loop."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def add_event(self, event: Event, *, ts: float, source: str) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO events (ts, level, level_rank, kind, code, text, source, values_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (ts, event.level, LEVELS.index(event.level), event.kind, event.code, event.text,
                 source, json.dumps(event.values)),
            )  # fmt: skip
            return int(cur.lastrowid or 0)

    def add_source_event(self, event: Event, *, source: str, ts: float) -> bool:
        """Keep an event another service published (its `seq` within its `seq_epoch`), so a
        consumer that missed it can fetch it from here; False for one kept already."""
        if event.seq is None or event.seq_epoch is None:
            return False
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO source_events"
                " (source, seq_epoch, seq, ts, level, kind, code, text, values_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (source, event.seq_epoch, event.seq, ts, event.level, event.kind, event.code,
                 event.text, json.dumps(event.values)),
            )  # fmt: skip
            return cur.rowcount == 1

    def source_events(
        self, *, source: str, seq_epoch: float, after_seq: int, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Another service's events of one epoch after `after_seq`, oldest first; each row's
        `id` is the event's `seq`, as in the master's own rows."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, ts, level, kind, code, text, source, values_json FROM source_events"
                " WHERE source = ? AND seq_epoch = ? AND seq > ? ORDER BY seq LIMIT ?",
                (source, seq_epoch, after_seq, limit),
            ).fetchall()
        keys = ("id", "ts", "level", "kind", "code", "text", "source")
        return [dict(zip(keys, r[:7], strict=True)) | {"values": json.loads(r[7])} for r in rows]

    def events(
        self,
        *,
        since_ts: float = 0.0,
        until_ts: float | None = None,
        min_level: str = "info",
        kind: str | None = None,
        code: str | None = None,
        text: str | None = None,
        limit: int = 100,
        after_id: int | None = None,
        source: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first. `code` and `text` match a part, `text` ignoring case.

        With `after_id`, the rows after that id oldest first instead: a consumer that missed
        events pages through the gap with the last id it got (ids are the events' `seq`)."""
        where = ["ts >= ?", "level_rank >= ?"]
        params: list[Any] = [since_ts, LEVELS.index(min_level)]
        if after_id is not None:
            where.append("id > ?")
            params.append(after_id)
        if source is not None:
            where.append("source = ?")
            params.append(source)
        if until_ts is not None:
            where.append("ts <= ?")
            params.append(until_ts)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if code:
            where.append("instr(code, ?) > 0")
            params.append(code)
        if text:
            where.append("instr(lower(text), lower(?)) > 0")
            params.append(text)
        sql = (
            "SELECT id, ts, level, kind, code, text, source, values_json FROM events"
            f" WHERE {' AND '.join(where)} ORDER BY id {'DESC' if after_id is None else 'ASC'}"
            " LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, (*params, limit)).fetchall()
        keys = ("id", "ts", "level", "kind", "code", "text", "source")
        return [dict(zip(keys, r[:7], strict=True)) | {"values": json.loads(r[7])} for r in rows]

    def prune_events(self, *, before_ts: float | None = None, keep_rows: int | None = None) -> int:
        """Forget the events older than `before_ts` and all but the newest `keep_rows`; how
        many went. Ids are never reused (AUTOINCREMENT), so a pruned log still counts on and
        a consumer's `after_id` stays valid (the rows before it are simply gone)."""
        where: list[str] = []
        params: list[Any] = []
        if before_ts is not None:
            where.append("ts < ?")
            params.append(before_ts)
        with self._lock:
            if keep_rows is not None:
                # the newest id taken first: a subquery in the DELETE may be evaluated after
                # the rows the other condition removed (SQLite's OR optimisation), and then
                # keeps too many
                (newest,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
                where.append("id <= ?")
                params.append(int(newest) - max(0, keep_rows))
            if not where:
                return 0
            cur = self._db.execute(f"DELETE FROM events WHERE {' OR '.join(where)}", params)
            return int(cur.rowcount)

    def save_command(self, entry: JournalEntry) -> None:
        """The command ledger's journal (shared/command_ledger.py): one row per correlation id."""
        with self._lock:
            self._db.execute(
                "INSERT INTO commands (correlation_id, fingerprint, reply_json, forget_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(correlation_id) DO UPDATE SET"
                " fingerprint = excluded.fingerprint, reply_json = excluded.reply_json,"
                " forget_at = excluded.forget_at",
                (entry.correlation_id, entry.fingerprint, entry.reply.model_dump_json(),
                 entry.forget_at),
            )  # fmt: skip
            # the ledger forgets after REMEMBER_S: so does the table (a heartbeat a second
            # keeps it at a few hundred rows)
            self._db.execute(
                "DELETE FROM commands WHERE forget_at <= ?", (entry.forget_at - REMEMBER_S,)
            )

    def load_commands(self, now: float, limit: int) -> list[JournalEntry]:
        """Entries not yet forgotten, oldest first (the forgotten ones are deleted here)."""
        with self._lock:
            self._db.execute("DELETE FROM commands WHERE forget_at <= ?", (now,))
            rows = self._db.execute(
                "SELECT correlation_id, fingerprint, reply_json, forget_at FROM commands"
                " ORDER BY forget_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            JournalEntry(str(c), str(f), CommandReply.model_validate_json(r), float(t))
            for c, f, r, t in reversed(rows)
        ]

    def put(self, key: str, value: Any, *, ts: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO state (key, value_json, updated_ts) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json,"
                " updated_ts = excluded.updated_ts",
                (key, json.dumps(value), ts),
            )

    def put_many(self, items: list[tuple[str, Any]], *, ts: float) -> None:
        """Every item or none: one transaction (a kill mid-way leaves the previous set)."""
        rows = [(key, json.dumps(value), ts) for key, value in items]  # may raise: nothing sent
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO state (key, value_json, updated_ts) VALUES (?, ?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json,"
                    " updated_ts = excluded.updated_ts",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT value_json FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
