"""The catalogue of event codes: every `code` a service may put in an `Event` on `events`.

Protection codes come from `shared.protection_codes` (raised and cleared per level); the
others are listed here. `docs/event-codes.md` is generated from this catalogue, and a test
scans the services' event emissions against it, so a new code is documented before it ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from shared.messages.events import EventKind, EventLevel
from shared.messages.pack import ContactorState
from shared.messages.slave import SlaveMode
from shared.protection_codes import CODE_TABLE, ProtectionCode


@dataclass(frozen=True)
class EventCode:
    code: str
    source: str
    """The service that emits it."""
    kinds: tuple[EventKind, ...]
    levels: tuple[EventLevel, ...]
    description: str


MASTER = "master_core"
CAN = "can_gateway"
SITE = "site_controller"


def _protection() -> tuple[EventCode, ...]:
    return tuple(
        EventCode(
            spec.code.value,
            MASTER,
            ("raise", "clear"),
            spec.levels,
            f"{spec.description} Raised and cleared per level; "
            "values: value, threshold, release, unit.",
        )
        for spec in CODE_TABLE
    )


def _contactor_states() -> tuple[EventCode, ...]:
    return tuple(
        EventCode(
            f"contactors_{state}",
            MASTER,
            ("info",),
            ("fault",) if state == "fault" else ("info",),
            f"The contactors entered the state {state}; the text gives the reason.",
        )
        for state in get_args(ContactorState)
    )


def _modes() -> tuple[EventCode, ...]:
    return tuple(
        EventCode(f"mode_{mode}", MASTER, ("mode",), ("info",), f"The system switched to {mode}.")
        for mode in get_args(SlaveMode)
    )


EVENT_CODES: tuple[EventCode, ...] = (
    *_protection(),
    EventCode("config_applied", MASTER, ("config",), ("info",),
              "A configuration version was applied; values: version, chemistry, cells."),
    *_contactor_states(),
    EventCode("contactors_close", MASTER, ("command",), ("info",),
              "A close request (command or start-up), with the refusal if refused."),
    EventCode("precharge_retry", MASTER, ("info",), ("warning",),
              "A precharge try timed out and the sequence waits to try again; the text gives "
              "|pack - DC link| at the timeout. After the last try the contactors fault."),
    EventCode("contactors_open", MASTER, ("command",), ("info",), "An open command."),
    EventCode("cycle_failed", MASTER, ("info",), ("warning", "fault"),
              "A system's cycle raised (warning, first of a stretch; counted in cycle_errors), "
              "or kept failing for 0.5 s so that its contactor coils were switched off "
              "(fault)."),
    EventCode("contactors_reset", MASTER, ("command",), ("warning",),
              "The contactor state machine refused the reset after a fault reset."),
    EventCode("reset_faults", MASTER, ("command",), ("info", "warning"),
              "A fault reset: done (info) or refused with the faults still latched (warning)."),
    EventCode("service_reset", MASTER, ("command",), ("warning",),
              "A service reset (admin, with a reason): who, why and what it cleared; or an "
              "override refused because it came on the ordinary reset topic."),
    EventCode("ocv_capture", MASTER, ("command", "info"), ("info", "warning"),
              "The capture of a slow cycle for the OCV branches (`ocv_capture`): started or "
              "aborted on request (command); each slow phase reached, done with the measured "
              "capacity (info), or aborted with its reason (warning); after a restart of the "
              "master, resumed (info) or aborted with gap, or not resumed (warning); values: "
              "state, abort_reason."),
    *_modes(),
    EventCode("controller_heartbeat", MASTER, ("info",), ("info",),
              "A controller heartbeat is present (first, or again after a loss)."),
    EventCode("controller_heartbeat_lost", MASTER, ("raise",), ("warning",),
              "No controller heartbeat within the timeout: limits fall back to 0 A."),
    EventCode("broker_connection_lost", MASTER, ("raise", "clear"), ("warning",),
              "The master's own broker connection dropped (no telemetry can arrive), and its "
              "return with the outage's length: named as the cause of a communication loss."),
    EventCode("communication_loss_recovered", MASTER, ("info",), ("warning",),
              "comm_loss.recovery auto: every module is back and no other fault holds, so the "
              "communication_loss latch was cleared without an operator (n of the hour's limit)."),
    EventCode("communication_loss_recovery_exhausted", MASTER, ("info",), ("warning",),
              "The hour's automatic recoveries are used up: communication_loss stays latched "
              "until an operator resets it."),
    EventCode("full_charge_request", MASTER, ("raise", "clear"), ("info",),
              "A full charge is requested (the SOC's last anchor is full_charge.interval_days "
              "old), and the request's end: the anchor came, or a fault or a charge limit of "
              "0 A holds it back; the text says why; values: since_anchor_s, interval_s."),
    EventCode("inverter_keepalive_lost", CAN, ("raise", "clear"), ("warning",),
              "No inverter keep-alive (0x305/0x307) within the timeout, and its return."),
    EventCode("can_link_down", CAN, ("raise", "clear"), ("warning",),
              "The CAN channel failed on receive (errors in a row) and is being reopened with "
              "back-off; cleared once it is open again."),
    # a site (services/site_controller), on bms/v1/{site}/events/site_controller; every one
    # names the string in values.system
    EventCode("site_config_applied", SITE, ("config",), ("info",),
              "A site configuration was applied; values: version, strings."),
    EventCode("site_config_refused", SITE, ("config",), ("warning",),
              "A site configuration was refused (the errors in the text); the previous one "
              "stays in force."),
    EventCode("site_bus_defined", SITE, ("info",), ("info",),
              "The first string closed onto the empty DC bus and defines its voltage; values: "
              "system, voltage_v."),
    EventCode("site_string_joining", SITE, ("command",), ("info",),
              "A string within the join window is asked to join (set_mode working, then "
              "contactors close): its master precharges and closes; values: system, "
              "voltage_v, bus_v."),
    EventCode("site_string_joined", SITE, ("info",), ("info",),
              "A string closed onto the DC bus and counts in the site's limits; values: "
              "system, voltage_v, bus_v."),
    EventCode("site_string_waiting", SITE, ("info",), ("info",),
              "A string waits to join, the reason in words (e.g. 3.4 V above the bus, waits "
              "for the bus to rise); values: system, voltage_v, bus_v."),
    EventCode("site_string_left", SITE, ("info",), ("info", "warning"),
              "A string left the DC bus's sums: asked to stand by (info), or in fault or "
              "stale (warning, at once); the text gives the reason; values: system."),
    EventCode("site_string_held", SITE, ("command",), ("info",),
              "A string is held out of the bus: its master was put in standby by an operator "
              "(not by the site controller), or an operator asked it out (site command "
              "site_string out); it stays in standby until an operator asks it to join "
              "again; values: system."),
    EventCode("site_string_released", SITE, ("command",), ("info",),
              "An operator asks a held string to join again (site command site_string join): "
              "it joins by the controller's rules; values: system."),
    EventCode("site_disconnected", SITE, ("command",), ("info",),
              "SCADA (802 SetOp 2) or an operator disconnected the site (site command "
              "site_operation disconnect): every string goes to standby and stays out until "
              "the site is connected again; values: site."),
    EventCode("site_connected", SITE, ("command",), ("info",),
              "SCADA (802 SetOp 1) or an operator connected the site again (site command "
              "site_operation connect): the strings the disconnect held join by the "
              "controller's rules; values: site."),
    EventCode("site_command_failed", SITE, ("command",), ("warning",),
              "A string's master refused set_mode or contactors close, or did not reply "
              "before it expired; it is asked again; values: system, command, arg."),
)  # fmt: skip

BY_CODE: dict[str, EventCode] = {e.code: e for e in EVENT_CODES}


def known_event_code(code: str) -> bool:
    return code in BY_CODE


def _check() -> None:
    if len(BY_CODE) != len(EVENT_CODES):
        raise RuntimeError("an event code is listed twice")
    missing = set(ProtectionCode) - set(BY_CODE)
    if missing:
        raise RuntimeError(f"protection codes missing from the event catalogue: {missing}")


_check()
