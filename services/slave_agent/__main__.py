"""`python -m services.slave_agent [--help]` runs a rack of slave modules;
`python -m services.slave_agent inject FAULT ...` injects a fault into a running simulation."""

from __future__ import annotations

import sys

from pydantic_settings import CliApp

from services.slave_agent.driver import Driver
from services.slave_agent.inject import inject_main
from services.slave_agent.service import SlaveAgent
from services.slave_agent.settings import SlaveAgentSettings
from services.slave_agent.sim_driver import SimulatedDriver
from shared.bus import MqttBus
from shared.bus.presence import PresenceLink
from shared.codec import encode
from shared.config import SystemConfig
from shared.messages import SlaveStatus
from shared.metrics import serve_metrics
from shared.runtime import run_until_signalled
from shared.settings import configure_logging
from shared.topics import SLAVE_STATUS

KIND = "slave_agent"


def make_driver(settings: SlaveAgentSettings, config: SystemConfig, modules: list[int]) -> Driver:
    if settings.driver == "modbus":
        from services.slave_agent.modbus_boot import make_modbus_driver

        return make_modbus_driver(settings, config, modules)
    return SimulatedDriver(
        config, modules, seed=settings.seed, initial_soc_pct=settings.initial_soc_pct,
        ambient_c=settings.ambient_c,
    )  # fmt: skip


def run(settings: SlaveAgentSettings) -> int:
    configure_logging(settings.log_level)
    settings = settings.model_copy(update={"instance": settings.instance_name()})
    bus = MqttBus.from_settings(settings, kind=KIND)
    presence: list[PresenceLink] = []

    def start_presence(modules: list[int]) -> None:
        for link in presence:
            link.stop()
        presence.clear()
        for m in modules:
            topic = SLAVE_STATUS.topic(bus.system, module=m)

            def status(state: str, m: int = m) -> bytes:
                msg = SlaveStatus(module=m, state="online" if state == "online" else "offline",
                                  driver=settings.driver, service=bus.service)  # fmt: skip
                return encode(msg, source=bus.service, seq=0, ts=bus.clock())

            link = PresenceLink(
                settings.endpoint, client_id=f"{bus.client_id}.m{m}", topic=topic,
                online=status("online"), offline=status("offline"),
                protocol=settings.mqtt_protocol, keepalive_s=settings.mqtt_keepalive_s,
                tls_ca_file=settings.mqtt_ca_file, tls_cert_file=settings.mqtt_cert_file,
                tls_key_file=settings.mqtt_key_file,
            )  # fmt: skip
            link.start()
            presence.append(link)

    agent = SlaveAgent(
        settings, bus, lambda c, m: make_driver(settings, c, m), on_modules=start_presence
    )

    metrics = serve_metrics(bus, settings)

    def cleanup() -> None:
        agent.stop()
        metrics.stop()
        for link in presence:
            link.stop()

    return run_until_signalled(bus, agent.run, cleanup)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["inject"]:
        return inject_main(args[1:])
    settings = CliApp.run(SlaveAgentSettings, cli_args=args)
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
