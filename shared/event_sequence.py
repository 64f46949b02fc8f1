"""Gap detection on the event streams: which events a consumer missed, and what to fetch.

Pure logic (no I/O, no clock): `shared.event_feed` wires it to the bus and `events_query`.

Every source publishes on `events/{source}`; its events carry `seq` and `seq_epoch` (see
`shared.messages.events.Event`). Within one epoch of one source `seq` counts up by one per
event, so a jump is a gap. The first event of a stream seen by this consumer sets where it
starts (what came before is history, fetched on demand, not a gap). A new epoch of a known
source starts a new count at that source's first seq; the old epoch's open gaps are dropped.
A seq at or below the highest seen is a duplicate (QoS 1 may redeliver) unless it fills a gap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_MISSING = 10_000
"""Open gaps kept per source; older missing seqs beyond this are given up (counted lost)."""


@dataclass(frozen=True)
class Gap:
    """Seqs `first`..`last` (inclusive) of one epoch of one source not seen yet."""

    source: str
    epoch_s: float | None
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class Observation:
    new: bool
    """Not seen before: hand it on. False for a duplicate."""
    gap: Gap | None = None
    """The gap this event opened (seqs skipped just before it)."""
    new_epoch: bool = False
    """The source restarted its count (a process restart, or a new master log)."""
    lost: int = 0
    """Missing seqs given up because of this event (an epoch change, or too many open)."""


@dataclass
class _Stream:
    epoch_s: float | None
    high: int
    missing: list[list[int]] = field(default_factory=list)
    """Sorted, disjoint [first, last] ranges below `high` not seen yet."""
    in_flight: tuple[int, int] | None = None

    def missing_count(self) -> int:
        return sum(b - a + 1 for a, b in self.missing)

    def take(self, seq: int) -> bool:
        """Remove `seq` from the missing ranges; whether it was missing."""
        for i, (a, b) in enumerate(self.missing):
            if a <= seq <= b:
                pieces = [r for r in ([a, seq - 1], [seq + 1, b]) if r[0] <= r[1]]
                self.missing[i : i + 1] = pieces
                return True
        return False

    def trim(self, keep: int) -> int:
        """Drop the oldest missing seqs beyond `keep`; how many were dropped."""
        dropped = 0
        while self.missing_count() > keep:
            a, b = self.missing[0]
            excess = min(self.missing_count() - keep, b - a + 1)
            dropped += excess
            if excess == b - a + 1:
                self.missing.pop(0)
            else:
                self.missing[0] = [a + excess, b]
        return dropped


class EventSequencer:
    """Tracks each source's stream; one instance per consumer, used from one thread."""

    def __init__(
        self, *, first_seq: Mapping[str, int] | None = None, max_missing: int = MAX_MISSING
    ) -> None:
        """`first_seq`: where each source's count starts in a new epoch (default 0; the
        master's log ids start at 1)."""
        self._first = dict(first_seq or {})
        self._max_missing = max_missing
        self._streams: dict[str, _Stream] = {}

    def resume(
        self,
        source: str,
        epoch_s: float | None,
        last_seq: int,
        missing: list[tuple[int, int]] | None = None,
    ) -> None:
        """Continue from a position the consumer kept (a gap after it is then detected), with
        the ranges it still missed below it (fetched again)."""
        stream = _Stream(epoch_s, last_seq)
        stream.missing = sorted([a, b] for a, b in missing or () if a <= b < last_seq)
        stream.trim(self._max_missing)
        self._streams[source] = stream

    def position(self, source: str) -> tuple[float | None, int] | None:
        """(epoch, highest seq seen) of a source, to be kept for `resume`."""
        s = self._streams.get(source)
        return None if s is None else (s.epoch_s, s.high)

    def sources(self) -> list[str]:
        return sorted(self._streams)

    def observe(self, source: str, epoch_s: float | None, seq: int | None) -> Observation:
        if seq is None:
            return Observation(True)  # unsequenced (an old publisher): nothing to check
        s = self._streams.get(source)
        if s is None:
            self._streams[source] = _Stream(epoch_s, seq)
            return Observation(True)
        if epoch_s != s.epoch_s:
            lost = s.missing_count()
            start = self._first.get(source, 0)
            fresh = _Stream(epoch_s, seq)
            gap = None
            if seq > start:
                gap = Gap(source, epoch_s, start, seq - 1)
                fresh.missing.append([start, seq - 1])
                lost += fresh.trim(self._max_missing)
            self._streams[source] = fresh
            return Observation(True, gap, new_epoch=True, lost=lost)
        if seq > s.high:
            gap = None
            lost = 0
            if seq > s.high + 1:
                gap = Gap(source, epoch_s, s.high + 1, seq - 1)
                s.missing.append([s.high + 1, seq - 1])
                lost = s.trim(self._max_missing)
            s.high = seq
            return Observation(True, gap, lost=lost)
        return Observation(s.take(seq))

    def missing(self, source: str) -> list[Gap]:
        s = self._streams.get(source)
        if s is None:
            return []
        return [Gap(source, s.epoch_s, a, b) for a, b in s.missing]

    def missing_total(self) -> int:
        return sum(s.missing_count() for s in self._streams.values())

    # --- fetching ---------------------------------------------------------------------------
    def next_fetch(self, source: str, max_rows: int) -> Gap | None:
        """The oldest missing range of `source` (at most `max_rows` seqs) to fetch now, or
        None when nothing is missing or a fetch is already under way."""
        s = self._streams.get(source)
        if s is None or s.in_flight is not None or not s.missing:
            return None
        a, b = s.missing[0]
        b = min(b, a + max_rows - 1)
        s.in_flight = (a, b)
        return Gap(source, s.epoch_s, a, b)

    def fetch_done(self, gap: Gap, *, covered_to: int) -> int:
        """End of a fetch (its rows went through `observe` already). The log answered every
        row it has from `gap.first` up to `covered_to` (the gap's end when the answer was not
        cut by its limit, else the last row returned): seqs of that span still missing do
        not exist in the log and are given up; returns how many."""
        s = self._streams.get(gap.source)
        if s is None or s.epoch_s != gap.epoch_s:
            return 0
        s.in_flight = None
        lost = 0
        for seq in range(gap.first, min(covered_to, gap.last) + 1):
            lost += s.take(seq)
        return lost

    def fetch_failed(self, gap: Gap) -> None:
        """No answer, or refused: the range stays missing for a later try."""
        s = self._streams.get(gap.source)
        if s is not None and s.in_flight == (gap.first, gap.last):
            s.in_flight = None
