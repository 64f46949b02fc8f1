"""Home Assistant's button and select (opt-in, BMS_HA_COMMANDS) become the master's commands.

Home Assistant publishes JSON on `ha/cmd/{command}`; the bridge checks it, at most one per
system and command a second (a held button must not flood the master), and sends the master's
`cmd/{command}` through a connection of its own, whose broker user (`integrations_commands`)
may send exactly `HA_COMMANDS`. The master decides as for any sender. A retained request is
ignored: it would be replayed at every reconnect.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from services.integrations.mirror import RateGate
from shared.bus import BusCore
from shared.log_limit import LimitedLog
from shared.messages import COMMAND_ARGS, CommandRequest, HaCommand
from shared.topics import COMMAND, COMMAND_REPLY, HA_COMMAND, HA_COMMANDS, INTEGRATIONS_COMMANDS

log = logging.getLogger("integrations.commands")
EXPIRY_S = 10.0
MIN_INTERVAL_S = 1.0
REPLY_CLIENT = "integrations-ha"
"""Replies are not read (the command user may read nothing but the requests); the outcome is
in the master's events, which the JSON mirror carries."""


class HaCommandRelay:
    def __init__(self, bus: BusCore, clock: Callable[[], float]) -> None:
        self.bus = bus
        self.clock = clock
        self.gate = RateGate(MIN_INTERVAL_S)
        self._log = LimitedLog(log, every_s=60.0)

    def attach(self, system: str) -> None:
        self.bus.subscribe_raw(HA_COMMAND.filter(system), self.on_request, qos=HA_COMMAND.qos)

    def _refuse(self, kind: str, topic: str, why: str) -> None:
        self.bus.counters[f"ha_commands_{kind}"] += 1
        self._log.warning(kind, "Home Assistant request on %s refused: %s", topic, why)

    def on_request(self, topic: str, payload: bytes, retained: bool) -> None:
        parsed = HA_COMMAND.parse(topic)
        if parsed is None:
            return
        system, params = parsed
        command = params["command"]
        if retained:
            return self._refuse("retained", topic, "retained (it would replay at reconnect)")
        if command not in HA_COMMANDS:
            return self._refuse("unknown", topic, f"{command!r} is not one of {HA_COMMANDS}")
        if len(payload) > HA_COMMAND.byte_limit:
            return self._refuse("invalid", topic, f"{len(payload)} bytes")
        try:
            request = HaCommand.model_validate_json(payload)
            args: dict[str, Any] = {} if command == "reset_faults" else {"mode": request.mode}
            COMMAND_ARGS[command].model_validate(args)
        except ValidationError as exc:
            return self._refuse("invalid", topic, str(exc.errors(include_url=False)[0]["msg"]))
        now = self.clock()
        if not self.gate.due(f"{system}/{command}", now):
            return self._refuse("throttled", topic, f"more than one a {MIN_INTERVAL_S:g} s")
        self.bus.publish(
            COMMAND,
            CommandRequest(
                command=command,
                correlation_id=uuid.uuid4().hex,
                reply_to=COMMAND_REPLY.topic(
                    system, user=INTEGRATIONS_COMMANDS, client=REPLY_CLIENT
                ),
                expires_at=now + EXPIRY_S,
                args=args,
            ),
            system=system,
            command=command,
        )
        self.bus.counters["ha_commands_sent"] += 1
        log.info("Home Assistant asked for %s on %s: sent", command, system)
        return None
