"""The CAN link's health: when to give up on the open channel and reopen it (pure).

python-can's receive thread stops for good on the first exception its listeners do not handle,
and some drivers do not recover by themselves: after one undecodable serial line (`\\xff\\r`),
python-can 4.6's slcan keeps the bad bytes in its line buffer, so every later read fails too.
A gateway that only logged would stay deaf while it reports itself online. So:

* every receive error is counted; an isolated one (a malformed line between good frames) only
  costs that line;
* `errors_to_reopen` errors in a row, with no good frame between, put the link **down**: the
  channel is closed and reopened, which resets the driver;
* reopens, failed or not, are spaced by a back-off that doubles from `backoff_min_s` to
  `backoff_max_s` until a good frame arrives, so neither a missing device nor a peer sending
  junk in a loop makes the gateway reopen in a tight loop;
* the link is **up** again once the channel is open (an idle bus is not a dead one: silence
  alone never puts a link down).

Transitions come back as `LinkEvent`s for the event log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LinkEvent = Literal["down", "up"]


@dataclass
class LinkHealth:
    errors_to_reopen: int = 2
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0

    up: bool = True
    errors_in_a_row: int = 0
    receive_errors: int = 0
    reopens: int = 0
    reopen_failures: int = 0
    next_reopen_s: float | None = None
    """When to try the next reopen (monotonic), while the link is down."""
    backoff_s: float = 0.0
    """The wait before the next reopen, unless a good frame came since the last one."""
    last_reopen_s: float | None = None

    def __post_init__(self) -> None:
        if self.errors_to_reopen < 1:
            raise ValueError("errors_to_reopen must be at least 1")
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")
        self.backoff_s = self.backoff_min_s

    def frame(self) -> None:
        """A good frame: the driver works; the next trouble starts from scratch."""
        self.errors_in_a_row = 0
        self.backoff_s = self.backoff_min_s
        self.last_reopen_s = None

    def error(self, now_s: float) -> LinkEvent | None:
        """A receive error; "down" when it takes the link down."""
        if not self.up:
            return None  # the channel is being replaced: its last errors say nothing new
        self.receive_errors += 1
        self.errors_in_a_row += 1
        if self.errors_in_a_row < self.errors_to_reopen:
            return None
        self.up = False
        earliest = now_s if self.last_reopen_s is None else self.last_reopen_s + self.backoff_s
        self.next_reopen_s = max(now_s, earliest)
        return "down"

    def reopen_due(self, now_s: float) -> bool:
        return self.next_reopen_s is not None and now_s >= self.next_reopen_s

    def reopened(self, now_s: float, ok: bool) -> LinkEvent | None:
        """The outcome of a reopen attempt; "up" when the channel is open again."""
        if self.last_reopen_s is not None:
            self.backoff_s = min(2 * self.backoff_s, self.backoff_max_s)
        self.last_reopen_s = now_s
        if not ok:
            self.reopen_failures += 1
            self.next_reopen_s = now_s + self.backoff_s
            return None
        self.reopens += 1
        self.errors_in_a_row = 0
        self.next_reopen_s = None
        self.up = True
        return "up"
