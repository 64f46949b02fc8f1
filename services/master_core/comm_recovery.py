"""Recovery from a communication loss without a person at the site (pure: time is passed in).

Found from outside: a broker restart of 3 s latched `communication_loss` on every system and
needed an operator at the site, 20 times out of 20, while the cells were fine. A real loss
must still open the contactors within its timeout (`comm_supervision`: unchanged); this module
only decides what happens once the modules are back.

`comm_loss.recovery` (configuration):

* `latch`: the fault stays latched until an operator resets it (the old behaviour);
* `auto` (default): once every module is fresh again and `communication_loss` is the only
  latched fault, the latch is cleared and the contactors may close again by themselves (where
  auto-close applies). At most `comm_loss.auto_recoveries_per_hour` recoveries in any sliding
  hour: the next loss latches, says so once, and stays latched until an operator resets it.

Each recovery and the refusal are events, with the cause when it is known: a broker outage
seen by the master itself (its own connection down) is named as such.

The hour's recoveries outlive a master restart (`persisted.CommRecoveryRecord`), or a restart
loop would recover without limit: `stored` gives them as wall-clock times (the monotonic
clock starts again with the process), `restore` takes them back.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

WINDOW_S: Final = 3600.0

Verdict = Literal["recover", "exhausted"]


@dataclass
class CommLossRecovery:
    policy: Literal["auto", "latch"]
    per_hour: int
    recoveries_s: deque[float] = field(default_factory=deque)
    """When each recovery of the last hour happened."""
    exhausted_said: bool = False

    def used(self, now_s: float) -> int:
        while self.recoveries_s and now_s - self.recoveries_s[0] >= WINDOW_S:
            self.recoveries_s.popleft()
        return len(self.recoveries_s)

    def decide(
        self, now_s: float, *, latched_faults: tuple[str, ...], every_module_fresh: bool
    ) -> Verdict | None:
        """Call on every step; "recover": clear the latch now (then `recovered`);
        "exhausted": the limit holds it (reported once per latch)."""
        if (
            self.policy != "auto"
            or latched_faults != ("communication_loss",)
            or not every_module_fresh
        ):
            if "communication_loss" not in latched_faults:
                self.exhausted_said = False
            return None
        if self.exhausted_said:
            return None  # this latch is the operator's now, whatever the hour brings
        if self.used(now_s) < self.per_hour:
            return "recover"
        self.exhausted_said = True
        return "exhausted"

    def stored(self, now_s: float, wall_s: float) -> tuple[list[float], bool]:
        """(wall-clock time of each recovery of the last hour, whether the current latch is
        the operator's), for the store; `now_s` on this object's clock, `wall_s` the wall
        clock at the same instant."""
        self.used(now_s)
        return [wall_s - (now_s - t) for t in self.recoveries_s], self.exhausted_said

    def restore(
        self, recoveries_wall_s: list[float], exhausted: bool, *, now_s: float, wall_s: float
    ) -> None:
        """Take back what `stored` gave. A time ahead of the wall clock (set back since) counts
        as now: it still counts for a whole hour, never less."""
        ages_s = sorted((max(0.0, wall_s - t) for t in recoveries_wall_s), reverse=True)
        self.recoveries_s = deque(now_s - age for age in ages_s if age < WINDOW_S)
        self.exhausted_said = exhausted

    def spent(self, now_s: float) -> None:
        """The count is unknown (a stored one that cannot be read): take the hour as used up,
        so an unreadable record never buys a restart loop more recoveries."""
        self.recoveries_s = deque([now_s] * self.per_hour)

    def recovered(self, now_s: float) -> int:
        """Record a recovery; returns how many the last hour holds, this one included."""
        self.recoveries_s.append(now_s)
        self.exhausted_said = False
        return self.used(now_s)


@dataclass
class BrokerOutages:
    """The master's own broker connection: when it was last down, to name a loss's cause."""

    down_since_s: float | None = None
    last_outage: tuple[float, float] | None = None

    def update(self, connected: bool, now_s: float) -> Literal["lost", "back"] | None:
        if not connected and self.down_since_s is None:
            self.down_since_s = now_s
            return "lost"
        if connected and self.down_since_s is not None:
            self.last_outage = (self.down_since_s, now_s)
            self.down_since_s = None
            return "back"
        return None

    def cause(self, since_s: float | None) -> str:
        """Why the modules fell silent, when the master's own outage explains it."""
        outage = self.last_outage
        if outage is not None and since_s is not None and outage[1] >= since_s:
            return f"the master's broker connection was down for {outage[1] - outage[0]:.1f} s"
        return "module telemetry stopped"
