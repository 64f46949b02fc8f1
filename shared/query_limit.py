"""How often each requester may ask the event log (`events_query`), and how much per page (pure:
the clock is passed in).

The log is open to the web application, the integrations bridge and third parties (the
`events_reader` broker user); a query reads SQLite on the master's protection thread, so no
requester may ask without limit. Each requester has its own token bucket: `burst` queries at
once, then one every `1 / rate_per_s` seconds; a refused query is answered at once with the
time to wait (`retry_after_s`), never queued.

The requester is the broker user the reply goes to (`reply/{user}/{client}`): the broker lets
only that user read it, so asking under another's name buys nothing but spends the other's
budget (MQTT tells the master nothing else about who published). Budgets are a table by
requester; a user not in it gets the third party's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from shared.topics import INTEGRATIONS, UI


@dataclass(frozen=True)
class QueryBudget:
    burst: int
    """Queries allowed at once (a backfill pages through a gap at this pace)."""
    rate_per_s: float
    """Queries regained per second."""
    page_rows: int
    """Most rows one answer carries (the request's `limit` is cut to it)."""


THIRD_PARTY_BUDGET: Final = QueryBudget(burst=10, rate_per_s=0.5, page_rows=500)
BUDGETS: Final[dict[str, QueryBudget]] = {
    UI: QueryBudget(burst=30, rate_per_s=3.0, page_rows=1000),
    INTEGRATIONS: QueryBudget(burst=20, rate_per_s=1.0, page_rows=500),
}
"""Per requester (broker user); anyone else: `THIRD_PARTY_BUDGET`. The web application's pages
ask on every view; the bridge's backfill of 10,000 missed events is 20 pages of 500."""
MAX_REQUESTERS: Final = 256
"""Requesters tracked at once; the longest idle is forgotten first (its bucket is full again
by then unless it asked within the last `burst / rate_per_s` seconds)."""


def budget_of(requester: str) -> QueryBudget:
    return BUDGETS.get(requester, THIRD_PARTY_BUDGET)


@dataclass
class _Bucket:
    tokens: float
    at_s: float


class QueryLimiter:
    """One token bucket per requester. `now_s` must not go backwards by much: a step back
    refills nothing (the bucket waits until the clock passes its last time again)."""

    def __init__(self, *, max_requesters: int = MAX_REQUESTERS) -> None:
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._max = max_requesters
        self.refused: int = 0

    def admit(self, requester: str, now_s: float) -> float | None:
        """Take one query from `requester`'s budget: None when admitted, else the seconds to
        wait before the next one would be."""
        budget = budget_of(requester)
        bucket = self._buckets.pop(requester, None)
        if bucket is None:
            bucket = _Bucket(float(budget.burst), now_s)
            while len(self._buckets) >= self._max:
                self._buckets.popitem(last=False)
        elapsed_s = max(0.0, now_s - bucket.at_s)
        bucket.tokens = min(float(budget.burst), bucket.tokens + elapsed_s * budget.rate_per_s)
        bucket.at_s = max(bucket.at_s, now_s)
        self._buckets[requester] = bucket  # the most recent last
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        self.refused += 1
        return (1.0 - bucket.tokens) / budget.rate_per_s
