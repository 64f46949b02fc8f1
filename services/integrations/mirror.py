"""Which messages the JSON mirror passes on (pure: the clock is passed in).

Pack state arrives at 10 Hz and cells at 1-10 Hz; a tool reading JSON rarely needs more than
1 Hz, so each (system, topic) passes at most one message per period, the first one after the
period has run out. Events and presence are never thinned: each one matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RateGate:
    """At most one message per `period_s` and key; `period_s` 0 passes every message."""

    period_s: float
    _last: dict[str, float] = field(default_factory=dict)

    def due(self, key: str, now_s: float) -> bool:
        last = self._last.get(key)
        # a clock stepped back must not hold a key for good: treat it as due
        if last is not None and 0.0 <= now_s - last < self.period_s:
            return False
        self._last[key] = now_s
        return True
