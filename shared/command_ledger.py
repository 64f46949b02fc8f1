"""Which commands already ran: a command is executed at most once per correlation id.

MQTT delivers QoS 1 at least once, a client may resend after a timeout, and captured bytes can
be published again. Without a memory the master would close the contactors a second time on a
resent `contactors close`. The ledger keeps, for each correlation id it has answered, a
fingerprint of the request and the reply it got:

* the same request again (same command, arguments, reply topic and expiry) is a duplicate: it
  gets the first reply again and is never executed;
* another request under a known id is refused, never executed (an id is not reusable);
* an id is remembered `REMEMBER_S` after it was answered, longer than any command may live
  (`MAX_LIFETIME_S`, checked by `refusal_reason`), so a duplicate is always caught before its
  expiry, and a reused id for a while after;
* at most `CAPACITY` ids: beyond that the oldest is forgotten and counted (`evicted`);
* across a restart through a `LedgerJournal` (the master keeps it in its SQLite file): a
  request is journalled before it runs, with a reply saying its outcome is unknown, and again
  with its reply once answered. Captured bytes published again after a restart get the saved
  reply and never run a second time (found by bench/chaos.py: a `contactors close` replayed
  after a master kill closed the contactors again).

Pure: the clock is passed in.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from shared.messages import CommandReply, CommandRequest

MAX_LIFETIME_S: Final = 120.0
"""A request may expire at most this far ahead. The longest wait any client of the stack
configures is 60 s (`ui_command_timeout_s`); this bounds how long an id must be kept."""
REMEMBER_S: Final = 600.0
CAPACITY: Final = 4096
"""Thousands of ids: far above what operators and gateways send in `REMEMBER_S` (a few a
second at most), a few hundred kB."""


def fingerprint(req: CommandRequest) -> str:
    """What makes two deliveries the same request (the envelope's seq and ts may differ)."""
    return json.dumps(
        [req.command, req.reply_to, req.expires_at, req.args], sort_keys=True, default=str
    )


@dataclass(frozen=True)
class _Entry:
    fingerprint: str
    reply: CommandReply
    forget_at: float


@dataclass(frozen=True)
class Verdict:
    kind: Literal["new", "duplicate", "reused"]
    reply: CommandReply | None = None
    """The first reply, for a duplicate."""


NEW: Final = Verdict("new")


@dataclass(frozen=True)
class JournalEntry:
    correlation_id: str
    fingerprint: str
    reply: CommandReply
    forget_at: float


class LedgerJournal(Protocol):
    """Where a ledger outlives its process."""

    def save_command(self, entry: JournalEntry) -> None: ...

    def load_commands(self, now: float, limit: int) -> list[JournalEntry]:
        """Entries not yet forgotten at `now`, oldest answer first, at most `limit`."""
        ...


def unknown_outcome(req: CommandRequest) -> CommandReply:
    """What a request journalled before it ran says when its process stopped before the reply."""
    return CommandReply(
        command=req.command,
        correlation_id=req.correlation_id,
        status="refused",
        reason="outcome unknown: the master stopped while running this request (it may have "
        "run); check the state and send a new command",
    )


class CommandLedger:
    def __init__(self, *, remember_s: float = REMEMBER_S, capacity: int = CAPACITY) -> None:
        if remember_s < MAX_LIFETIME_S:
            raise ValueError(f"remember_s {remember_s} < the command lifetime {MAX_LIFETIME_S}")
        self.remember_s = remember_s
        self.capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, req: CommandRequest, now: float) -> Verdict:
        self._forget(now)
        entry = self._entries.get(req.correlation_id)
        if entry is None:
            return NEW
        if entry.fingerprint == fingerprint(req):
            return Verdict("duplicate", entry.reply)
        return Verdict("reused")

    def record(self, req: CommandRequest, reply: CommandReply, now: float) -> JournalEntry:
        """Remember the reply to `req`; the entry, for a journal."""
        entry = JournalEntry(req.correlation_id, fingerprint(req), reply, now + self.remember_s)
        self.restore(entry)
        return entry

    def restore(self, entry: JournalEntry) -> None:
        """Take back an entry (from a journal, oldest first)."""
        cid = entry.correlation_id
        self._entries[cid] = _Entry(entry.fingerprint, entry.reply, entry.forget_at)
        self._entries.move_to_end(cid)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evicted += 1

    def _forget(self, now: float) -> None:
        # Entries are in answer order, so the ones to forget are at the front (a wall clock
        # stepping back only delays forgetting).
        while self._entries:
            cid, entry = next(iter(self._entries.items()))
            if entry.forget_at > now:
                return
            del self._entries[cid]
