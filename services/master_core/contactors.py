"""Main contactor and precharge state machine: pure logic, no I/O.

Whether a loss of communication opens the contactors is decided in `comm_supervision.py`.

The caller passes the monotonic time `now_s` and the measurements on every cycle and writes the
returned coil commands to the hardware. States (`ContactorState`):

    standby --request_close--> precharge --done--> closed --request_open--> opening --> standby
    any state --trip / fault latched / feedback mismatch / precharge failed--> fault
    fault --reset (fault no longer latched, contacts read open)--> standby

Precharge (foxBMS 2, Orion BMS 2): close main negative and the precharge relay; once both read
closed and |pack - DC link| <= `precharge_voltage_diff_v`, close main positive, then open the
precharge relay. An attempt that does not get there within `precharge_timeout_s` opens everything,
waits `precharge_retry_wait_s` and tries again; after 1 + `precharge_retries` tries it is a fault.

Safety rules, each enforced inside `step` whatever the requests were:

* no coil is ever commanded on while `fault_latched` is True: a latched fault trips at once;
* a trip commands every coil off in the same call (`trip` returns those outputs);
* every coil command must be confirmed by its auxiliary contact within `feedback_timeout_s`;
  a contact that disagrees longer (stuck open, welded, dropped out) is a feedback mismatch
  and a fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

from shared.config import ContactorConfig
from shared.messages.pack import ContactorState

__all__ = [
    "CONTACTORS",
    "ContactorFeedback",
    "ContactorName",
    "ContactorOutputs",
    "ContactorStateMachine",
    "PrechargePhase",
]

ContactorName = Literal["main_positive", "main_negative", "precharge"]
CONTACTORS: Final[tuple[ContactorName, ...]] = get_args(ContactorName)

PrechargePhase = Literal["start", "charging", "closing_positive", "releasing_precharge", "wait"]


@dataclass(frozen=True, slots=True)
class ContactorFeedback:
    """Measured positions from the auxiliary contacts: True = closed."""

    main_positive: bool = False
    main_negative: bool = False
    precharge: bool = False

    def closed(self, name: ContactorName) -> bool:
        return bool(getattr(self, name))

    @property
    def all_open(self) -> bool:
        return not (self.main_positive or self.main_negative or self.precharge)


@dataclass(frozen=True, slots=True)
class ContactorOutputs:
    """Commanded coil outputs (True = energised, contact closed), with the state machine state."""

    main_positive: bool
    main_negative: bool
    precharge: bool
    state: ContactorState
    reason: str
    """Why the last transition happened."""
    feedback_mismatch: bool = False
    """A contact disagreed with its command for longer than `feedback_timeout_s` this cycle."""

    def commanded(self, name: ContactorName) -> bool:
        return bool(getattr(self, name))

    @property
    def all_off(self) -> bool:
        return not (self.main_positive or self.main_negative or self.precharge)


_OPEN: Final = (False, False, False)
_CHARGE: Final = (False, True, True)  # main negative + precharge relay
_BRIDGE: Final = (True, True, True)  # main positive closes while precharge still holds the link
_CLOSED: Final = (True, True, False)


class ContactorStateMachine:
    """The contactor sequence for one string. Call `step` once per control cycle."""

    def __init__(self, config: ContactorConfig) -> None:
        self._config = config
        self._state: ContactorState = "standby"
        self._reason = "initial state"
        self._state_since_s: float | None = None
        self._phase: PrechargePhase = "start"
        self._attempt = 0
        self._phase_since_s = 0.0
        self._command: dict[ContactorName, bool] = dict.fromkeys(CONTACTORS, False)
        # None until the first step: the startup grace for the feedback timeout starts there.
        self._command_since: dict[ContactorName, float | None] = dict.fromkeys(CONTACTORS, None)
        self._fault_latched: bool | None = None
        self._feedback: ContactorFeedback | None = None
        self._mismatch = False
        self._feedback_after_open = False
        """A step has read the feedback since every coil was last commanded off."""
        self._precharge_failures = 0

    # -- read-only view ----------------------------------------------------------------------

    @property
    def state(self) -> ContactorState:
        return self._state

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def state_since_s(self) -> float | None:
        """Time of the last transition (None before the first one)."""
        return self._state_since_s

    @property
    def precharge_attempt(self) -> int:
        """Number of precharge tries started in the current (or last) close sequence."""
        return self._attempt

    @property
    def precharge_failures(self) -> int:
        """Close sequences that ran out of precharge tries since start-up (only grows; the
        plausibility check raises precharge_failure when it does)."""
        return self._precharge_failures

    @property
    def precharge_phase(self) -> PrechargePhase:
        """Where the precharge sequence is (meaningful in state precharge only)."""
        return self._phase

    @property
    def outputs(self) -> ContactorOutputs:
        return ContactorOutputs(
            main_positive=self._command["main_positive"],
            main_negative=self._command["main_negative"],
            precharge=self._command["precharge"],
            state=self._state,
            reason=self._reason,
            feedback_mismatch=self._mismatch,
        )

    # -- requests ------------------------------------------------------------------------------

    def request_close(self, now_s: float) -> str | None:
        """Start the precharge sequence; returns why not, or None when accepted.

        The coils are only energised by the next `step`, which checks `fault_latched` again.
        """
        if self._fault_latched is None:
            return "no measurements yet: call step() first"
        if self._fault_latched:
            return "a protection fault is latched"
        if self._state != "standby":
            return f"contactors are in state {self._state!r}; close is only possible from standby"
        self._attempt = 0
        self._phase = "start"
        self._transition(now_s, "precharge", "close requested")
        return None

    def request_open(self, now_s: float) -> ContactorOutputs:
        """Open everything now; a no-op in standby and fault (already open)."""
        if self._state in ("precharge", "closed"):
            self._set_command(now_s, _OPEN)
            self._transition(now_s, "opening", "open requested")
        return self.outputs

    def trip(self, now_s: float, reason: str) -> ContactorOutputs:
        """Protection fault: every coil off at once and state fault; returns those outputs.

        Goes straight to fault (not through opening): the caller must not wait a cycle to drop
        the coils, and `reset` checks the feedback before anything can close again.
        """
        self._set_command(now_s, _OPEN)
        if self._state != "fault":
            self._transition(now_s, "fault", reason)
        return self.outputs

    def reset(self, now_s: float) -> str | None:
        """Leave fault for standby; returns why not, or None when done."""
        if self._state != "fault":
            return f"contactors are in state {self._state!r}, not in fault"
        if self._fault_latched is None or self._feedback is None:
            return "no measurements yet: call step() first"
        if self._fault_latched:
            return "a protection fault is still latched"
        if not self._feedback_after_open:
            return "the contacts have not been read since the coils dropped: call step() first"
        closed = [name for name in CONTACTORS if self._feedback.closed(name)]
        if closed:
            return f"feedback shows {', '.join(closed)} closed"
        self._transition(now_s, "standby", "reset")
        return None

    # -- the cycle -----------------------------------------------------------------------------

    def step(
        self,
        now_s: float,
        *,
        pack_voltage_v: float,
        bus_voltage_v: float,
        feedback: ContactorFeedback,
        fault_latched: bool,
    ) -> ContactorOutputs:
        """One control cycle: supervise the feedback, advance the sequence, return the coils."""
        self._fault_latched = fault_latched
        self._feedback = feedback
        if not any(self._command.values()):
            self._feedback_after_open = True
        mismatches = self._supervise(now_s, feedback)
        self._mismatch = bool(mismatches)

        if self._state != "fault":
            if mismatches:
                self.trip(now_s, "feedback mismatch: " + "; ".join(mismatches))
            elif fault_latched:
                self.trip(now_s, "protection fault latched")
        if self._state == "fault":
            self._set_command(now_s, _OPEN)  # also covers a trip() between two steps
        elif self._state == "opening":
            if feedback.all_open:
                self._transition(now_s, "standby", "contactors confirmed open")
        elif self._state == "precharge":
            self._precharge(now_s, abs(pack_voltage_v - bus_voltage_v), feedback)
        return self.outputs

    def _precharge(self, now_s: float, diff_v: float, feedback: ContactorFeedback) -> None:
        cfg = self._config
        if self._phase == "start":
            self._start_attempt(now_s)
        elif self._phase == "charging":
            elapsed = now_s - self._phase_since_s
            # Both paths must be confirmed, or an equal bus voltage may come from elsewhere.
            linked = feedback.main_negative and feedback.precharge
            # A NaN reading compares False: it can only time out, never close.
            if linked and diff_v <= cfg.precharge_voltage_diff_v:
                self._set_command(now_s, _BRIDGE)
                self._enter_phase(now_s, "closing_positive")
                self._reason = (
                    f"precharge done: |pack - DC link| = {diff_v:.2f} V "
                    f"<= {cfg.precharge_voltage_diff_v:g} V after {elapsed:.3f} s"
                )
            elif elapsed >= cfg.precharge_timeout_s:
                self._set_command(now_s, _OPEN)
                tries = self._attempt
                if tries > cfg.precharge_retries:
                    self._precharge_failures += 1
                    self.trip(now_s, f"precharge failed after {tries} tries")
                    return
                self._enter_phase(now_s, "wait")
                self._reason = (
                    f"precharge try {tries} timed out after {cfg.precharge_timeout_s:g} s "
                    f"(|pack - DC link| = {diff_v:.2f} V); retrying"
                )
        elif self._phase == "closing_positive":
            if feedback.main_positive:
                self._set_command(now_s, _CLOSED)
                self._enter_phase(now_s, "releasing_precharge")
        elif self._phase == "releasing_precharge":
            if not feedback.precharge:
                self._transition(now_s, "closed", self._reason)
        elif self._phase == "wait":
            waited = now_s - self._phase_since_s
            if waited >= cfg.precharge_retry_wait_s and feedback.all_open:
                self._start_attempt(now_s)

    def _start_attempt(self, now_s: float) -> None:
        self._attempt += 1
        self._set_command(now_s, _CHARGE)
        self._enter_phase(now_s, "charging")

    def _enter_phase(self, now_s: float, phase: PrechargePhase) -> None:
        self._phase = phase
        self._phase_since_s = now_s

    def _transition(self, now_s: float, state: ContactorState, reason: str) -> None:
        self._state = state
        self._reason = reason
        self._state_since_s = now_s

    def _set_command(self, now_s: float, coils: tuple[bool, bool, bool]) -> None:
        if any(coils) or any(self._command.values()):
            self._feedback_after_open = False
        for name, on in zip(CONTACTORS, coils, strict=True):
            if self._command[name] != on or self._command_since[name] is None:
                self._command[name] = on
                self._command_since[name] = now_s

    def _supervise(self, now_s: float, feedback: ContactorFeedback) -> list[str]:
        """Contacts that disagree with their command for longer than the feedback timeout."""
        out: list[str] = []
        for name in CONTACTORS:
            since = self._command_since[name]
            if since is None:
                self._command_since[name] = since = now_s
            commanded = self._command[name]
            if feedback.closed(name) == commanded:
                continue
            if now_s - since > self._config.feedback_timeout_s:
                if commanded:
                    out.append(f"{name} commanded closed but reads open")
                else:
                    out.append(f"{name} commanded open but reads closed (welded?)")
        return out
