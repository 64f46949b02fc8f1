"""Start the whole stack with a simulated battery: `make run` / `python -m services`.

Starts a broker (local mosquitto, else the embedded amqtt broker) unless one is given, and
runs every service as its own process with prefixed logs. The user access application of each
system publishes the demo configuration at its first start and prints the admin password
once. With `--site ID` the systems are the parallel strings of one site: the first string's
web application keeps the site configuration (its Site configuration page; at its first start
it seeds every system as a string and publishes it), and the site controller runs under the
site id. Ctrl-C (SIGINT), SIGTERM or SIGHUP stops everything: SIGTERM to every service at once,
SIGKILL to those still running after a grace (`STOP_STEPS`); killed outright, the launcher
takes its services and its broker with it (shared/parent_death.py). `--master-layout shared`
runs one master process for every system instead of one each (`BMS_SYSTEMS`,
services/master_core/host.py).

Software in the loop (the default): per system the plant (`python -m services.plant`) serves
the slave boards and the relay module on Modbus TCP and the IVT-S, the iso165C and an inverter
on CAN (python-can udp_multicast); the slave agent reads the boards (`--driver modbus`), the
master reads the devices (`--hardware devices`), the CAN gateway talks to the plant's
inverter. The configuration (`shared.config.plant_demo_config`) says where every device is.
Where udp_multicast frames do not come back (no multicast route), or with `--in-process`, the
stack falls back to the simulation inside the master and the slave agent, and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from services.plant.settings import DEFAULT_BOARD_MAP
from shared.broker import EmbeddedBroker, MosquittoBroker, find_mosquitto, free_port
from shared.bus import MqttBus
from shared.config import SiteConfig, SystemConfig, demo_config, plant_demo_config
from shared.endpoint import DEFAULT_MQTT_PROTOCOL
from shared.messages import ConfigMessage
from shared.parent_death import with_parent_death
from shared.settings import parse_mqtt_url
from shared.topics import CONFIG

SERVICES_DIR = Path(__file__).resolve().parent
COLOURS = ("36", "33", "35", "32", "34", "31")
MODBUS_TCP_BASE_PORT = 5020
"""System i serves Modbus TCP on 5020 + i (502 needs root)."""
UI_BASE_PORT = 8000
"""System i serves its user access application on 8000 + i."""
METRICS_PORT = 9108
"""The integrations bridge (one for every system) serves Prometheus metrics here."""
ADMIN_PASSWORD_LINE = re.compile(r"first start: user '(\w+)', password '([^']+)'")


@dataclass(frozen=True)
class StopStep:
    signal: signal.Signals
    wait_s: float
    """Up to this long for every service signalled to exit, before the next step."""


STOP_STEPS = (StopStep(signal.SIGTERM, 5.0), StopStep(signal.SIGKILL, 2.0))
"""How the launcher stops its services: each step's signal to every service still running (to
its process group), all at once, then a wait. SIGKILL cannot be refused: 7 s at most."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, `docker stop`, systemd, the terminal or SSH session closed: the services, each in a
session of its own, get none of them from the terminal or the caller: the launcher stops
them."""


class StopRequested(BaseException):
    """A stop signal arrived: whatever the launcher was doing, it stops everything (a
    BaseException, as KeyboardInterrupt: no `except Exception` on the way swallows it)."""


def stop_processes(
    procs: Mapping[str, subprocess.Popen[bytes]], steps: Sequence[StopStep] = STOP_STEPS
) -> dict[str, signal.Signals | None]:
    """Stop `procs` (label: a process leading its own process group) by `steps`; for each, the
    signal it exited on (the step's signal it got last), None when it was already gone or
    survived every step."""
    stopped_by: dict[str, signal.Signals | None] = {
        label: None for label in procs if procs[label].poll() is not None
    }
    for step in steps:
        running = [label for label in procs if label not in stopped_by]
        for label in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(procs[label].pid, step.signal)
        deadline = time.monotonic() + step.wait_s
        for label in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                procs[label].wait(max(0.0, deadline - time.monotonic()))
                stopped_by[label] = step.signal
    return {label: stopped_by.get(label) for label in procs}


@dataclass(frozen=True)
class ServicePlan:
    name: str
    per_system: bool = True


PLANT_BOARDS_BASE_PORT = 5120
"""System i's plant serves its slave boards on Modbus TCP 5120 + i (its relay module on
`PLANT_MODBUS_BASE_PORT` + i, from the configuration)."""

# Start order: data producers first, then the master, then the gateways and the UI.
PLAN = (
    ServicePlan("plant"),
    ServicePlan("slave_agent"),
    ServicePlan("master_core"),
    ServicePlan("modbus_gateway"),
    ServicePlan("can_gateway"),
    ServicePlan("config_ui"),
    ServicePlan("integrations", per_system=False),
    ServicePlan("site_controller", per_system=False),
)
SITE_ONLY = frozenset({"site_controller"})
"""Services started only with `--site`: under the site id, not a system's."""


def available_services(*, plant: bool = True) -> list[ServicePlan]:
    """Services that exist in this checkout (a service joins once it has a `__main__`); the
    plant only in the loop."""
    return [
        p
        for p in PLAN
        if (SERVICES_DIR / p.name / "__main__.py").exists() and (plant or p.name != "plant")
    ]


def system_ids(count: int) -> list[str]:
    return ["demo"] if count == 1 else [f"demo{i + 1}" for i in range(count)]


class _Broker(Protocol):
    @property
    def url(self) -> str: ...

    def start(self, timeout_s: float = ...) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Child:
    label: str
    argv: list[str]
    env: dict[str, str]
    colour: str
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    threads: list[threading.Thread] = field(default_factory=list)


def _pump(
    stream: IO[bytes],
    prefix: str,
    out: IO[str],
    lock: threading.Lock,
    on_line: Callable[[str], None] | None = None,
) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        with lock:
            out.write(f"{prefix} {line}\n")
            out.flush()
        if on_line is not None:
            on_line(line)


class Launcher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.systems = system_ids(args.systems)
        self.site: str | None = getattr(args, "site", None)
        """`--site`: the systems are the strings of this site (the site controller runs)."""
        self.broker: _Broker | None = None
        self.protocol = os.environ.get("BMS_MQTT_PROTOCOL", DEFAULT_MQTT_PROTOCOL)
        self.children: list[Child] = []
        self.endpoints: list[str] = []
        self.metrics_ports: list[str] = []
        self.buses: list[MqttBus] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.stop_requested = False
        """Set by the first stop signal (later ones are ignored) and by `stop`."""
        self.master_layout: str = getattr(args, "master_layout", "process")
        """`process`: a master process per system; `shared`: one master process hosting every
        system (`BMS_SYSTEMS`), each with its own connection, store and loop thread."""
        self.in_loop = False
        """True: the plant on the wire (software in the loop); False: the in-process simulation."""

    def say(self, text: str) -> None:
        with self.lock:
            print(f"\033[1m[launcher]\033[0m {text}", flush=True)

    def start_broker(self) -> str:
        if self.args.mqtt_url:
            parse_mqtt_url(self.args.mqtt_url)
            self.say(f"using the broker at {self.args.mqtt_url}")
            return str(self.args.mqtt_url)
        port = self.args.broker_port
        with contextlib.suppress(OSError):
            if port and _port_in_use(port):
                self.say(f"port {port} is taken, picking a free one")
                port = 0
        port = port or free_port()
        if find_mosquitto() and self.args.broker != "embedded":
            self.broker = MosquittoBroker(port, dies_with_parent=True)
            kind = "mosquitto"
        else:
            self.broker = EmbeddedBroker(port)
            self.protocol = "3.1.1"  # amqtt speaks MQTT 3.1.1 only
            kind = "embedded amqtt broker (MQTT 3.1.1)"
        self.broker.start()
        self.say(f"started {kind} at {self.broker.url}")
        return self.broker.url

    def choose_simulation(self) -> None:
        """In the loop when udp_multicast works here, else the in-process simulation."""
        if self.args.in_process:
            self.say("in-process simulation (--in-process): no plant, CAN gateway on virtual")
            return
        from shared.can_bus import multicast_problem

        problem = multicast_problem() or self.stored_elsewhere()
        if problem is None:
            self.in_loop = True
            self.say("software in the loop: plant on Modbus TCP and CAN (udp_multicast)")
        else:
            self.say(
                f"\033[1m{problem}: falling back to the in-process simulation (master "
                "--hardware simulated, simulated slave agent, CAN gateway on virtual)\033[0m"
            )

    def stored_elsewhere(self) -> str | None:
        """What is wrong when a system's stored configuration (the UI's, from an earlier run)
        does not put its devices where the plant serves them: the master would find none."""
        from services.config_ui.config_store import ConfigStore, StoredConfigError

        data_dir = Path(os.environ.get("BMS_DATA_DIR", "var"))
        for index, system in enumerate(self.systems):
            db = data_dir / f"config_ui-{system}.sqlite"
            if not db.exists():
                continue
            try:
                with ConfigStore(db) as store:
                    latest = store.latest()
            except (StoredConfigError, OSError, sqlite3.Error):
                continue  # the UI reports it; the plant's wiring cannot be judged
            if latest is not None and plant_wiring(latest.config) != plant_wiring(
                plant_demo_config(system, index)
            ):
                return (
                    f"the stored configuration of system {system!r} puts its devices elsewhere "
                    f"than the plant (remove {db} to run in the loop)"
                )
        return None

    def config_of(self, system: str) -> SystemConfig:
        index = self.systems.index(system)
        return plant_demo_config(system, index) if self.in_loop else demo_config(system)

    def publish_configs(self, url: str) -> None:
        """Without the UI (which owns the configuration), publish the demo configuration."""
        if any(p.name == "config_ui" for p in available_services(plant=self.in_loop)):
            return
        for system in self.systems:
            bus = MqttBus(
                parse_mqtt_url(url),
                system=system,
                service="launcher",
                kind="launcher",
                protocol=self.protocol,
            )
            if not bus.start(wait_s=10):
                raise SystemExit(f"cannot reach the broker at {url}")
            config = self.config_of(system)
            bus.publish(CONFIG, ConfigMessage(config=config))
            self.buses.append(bus)
            self.say(f"published the configuration of system {system!r} ({_describe(config)})")

    def plan_children(self, url: str) -> None:
        services = available_services(plant=self.in_loop)
        for i, plan in enumerate(services):
            if plan.name in SITE_ONLY and self.site is None:
                continue
            hosts_all = plan.name == "master_core" and self.master_layout == "shared"
            per_system = plan.per_system and not hosts_all
            for system in self.systems if per_system else self.systems[:1]:
                label = (
                    plan.name
                    if not per_system or len(self.systems) == 1
                    else f"{plan.name}:{system}"
                )
                env = dict(os.environ)
                env.update(
                    BMS_MQTT_URL=url,
                    BMS_SYSTEM=self.site if plan.name in SITE_ONLY and self.site else system,
                    BMS_MQTT_PROTOCOL=self.protocol,
                    PYTHONUNBUFFERED="1",
                )
                index = self.systems.index(system)
                if plan.name == "modbus_gateway":
                    port = MODBUS_TCP_BASE_PORT + index
                    env.setdefault("BMS_TCP_PORT", str(port))
                    self.endpoints.append(f"Modbus TCP {system}: 127.0.0.1:{env['BMS_TCP_PORT']}")
                if plan.name == "config_ui":
                    port = UI_BASE_PORT + index
                    env.setdefault("BMS_UI_PORT", str(port))
                    # the UI owns the configuration; on a fresh store it seeds the demo system
                    env.setdefault("BMS_UI_SEED_CONFIG", "plant" if self.in_loop else "demo")
                    env.setdefault("BMS_UI_SEED_INDEX", str(index))
                    if self.site:  # each string's web application has the Site page
                        env.setdefault("BMS_SITE", self.site)
                    if self.site and index == 0:
                        # the first keeps the site configuration (versioned, edited, published)
                        env.setdefault("BMS_UI_SITE_CONFIG", "true")
                        env.setdefault("BMS_UI_SEED_SITE_STRINGS", ",".join(self.systems))
                        self.endpoints.append(
                            f"Site config:    http://127.0.0.1:{env['BMS_UI_PORT']}/site/config"
                        )
                    self.endpoints.append(
                        f"UI {system}:         http://127.0.0.1:{env['BMS_UI_PORT']}/"
                    )
                if plan.name != "integrations":
                    # every service serves its own /metrics; the bridge's port is the known one
                    env.setdefault("BMS_METRICS_PORT", str(free_port()))
                    self.metrics_ports.append(f"{label} {env['BMS_METRICS_PORT']}")
                if plan.name == "integrations":
                    env.setdefault("BMS_METRICS_PORT", str(_free_or(METRICS_PORT)))
                    if self.site:  # the site is one more device to HA, Prometheus, Sparkplug
                        env.setdefault("BMS_SITE", self.site)
                    self.endpoints.append(
                        f"Metrics:        http://127.0.0.1:{env['BMS_METRICS_PORT']}/metrics"
                    )
                    self.endpoints.append(
                        f"JSON mirror:    bms/v1/<system>/json/# (Home Assistant: "
                        f"BMS_HA_DISCOVERY={env.get('BMS_HA_DISCOVERY', 'false')})"
                    )
                    self.endpoints.append(
                        f"Sparkplug B:    spBv1.0/{env.get('BMS_SPARKPLUG_GROUP', 'bms')}/# "
                        f"(BMS_SPARKPLUG={env.get('BMS_SPARKPLUG', 'false')})"
                    )
                env.update(self._wiring(plan.name, index, system))
                if plan.name in SITE_ONLY and self.site is not None:
                    self.endpoints.append(
                        f"Site {self.site}:     bms/v1/{self.site}/site/state (strings "
                        f"{', '.join(self.systems)})"
                    )
                if hosts_all:  # one process for every system (services/master_core/host.py)
                    env["BMS_SYSTEMS"] = ",".join(self.systems)
                if self.site is not None and plan.name == "master_core":
                    # the site controller alone closes a string onto the common bus
                    env.setdefault("BMS_AUTO_CLOSE", "false")
                argv = [sys.executable, "-m", f"services.{plan.name}"]
                self.children.append(Child(label, argv, env, COLOURS[i % len(COLOURS)]))
        if self.site is not None and any(p.name == "modbus_gateway" for p in services):
            self.children.append(self._site_modbus(url))
        if not services:
            self.say("no services in this checkout yet; the broker and the configuration are up")

    def _site_modbus(self, url: str) -> Child:
        """`--site`: one more Modbus gateway serving the site as one battery (802 the site, an
        804 per string), in the site's own stack: under the site id, its interface the first
        string's but on the port after the systems' and without RTU (that line is the
        string's)."""
        assert self.site is not None
        port = os.environ.get("BMS_SITE_TCP_PORT", str(MODBUS_TCP_BASE_PORT + len(self.systems)))
        env = dict(os.environ)
        env.update(
            BMS_MQTT_URL=url, BMS_SYSTEM=self.site, BMS_SITE=self.site, BMS_TCP_PORT=port,
            BMS_RTU_ENABLED="false", BMS_MQTT_PROTOCOL=self.protocol, PYTHONUNBUFFERED="1",
        )  # fmt: skip
        env.setdefault("BMS_METRICS_PORT", str(free_port()))
        self.metrics_ports.append(f"modbus_gateway:{self.site} {env['BMS_METRICS_PORT']}")
        self.endpoints.append(f"Modbus TCP site {self.site}: 127.0.0.1:{port}")
        argv = [sys.executable, "-m", "services.modbus_gateway"]
        return Child(f"modbus_gateway:{self.site}", argv, env, COLOURS[0])

    def _wiring(self, service: str, index: int, system: str) -> dict[str, str]:
        """How a service reaches the plant's devices (in the loop) or the simulation."""
        if not self.in_loop:
            if service == "master_core":
                return {"BMS_HARDWARE": "simulated"}  # the plant in the master's process
            if service == "can_gateway":
                # no CAN here: python-can's in-process bus (the master simulates the inverter)
                return {
                    "BMS_CAN_INTERFACE": os.environ.get("BMS_CAN_INTERFACE", "virtual"),
                    "BMS_CAN_CHANNEL": os.environ.get("BMS_CAN_CHANNEL", f"bms-{system}"),
                }
            return {}
        boards = f"tcp://127.0.0.1:{PLANT_BOARDS_BASE_PORT + index}"
        wiring = {
            "plant": {"BMS_BOARDS_PORT": str(PLANT_BOARDS_BASE_PORT + index)},
            "slave_agent": {
                "BMS_DRIVER": "modbus",
                "BMS_MODBUS_PORT": boards,
                "BMS_MODBUS_MAP_FILE": DEFAULT_BOARD_MAP,
            },
            "master_core": {"BMS_HARDWARE": "devices"},
        }
        return wiring.get(service, {})

    def spawn(self, child: Child) -> None:
        # A session of its own: the kernel's autogroup gives each service its own share of the
        # CPU under load. Out of the launcher's process group, a service gets no Ctrl-C: `stop`
        # stops it, and the kernel does when the launcher dies (spawned by the main thread,
        # which lives as long as the launcher: shared/parent_death.py).
        child.proc = subprocess.Popen(
            with_parent_death(child.argv),
            env=child.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        prefix = f"\033[{child.colour}m[{child.label}]\033[0m"
        assert child.proc.stdout is not None
        t = threading.Thread(
            target=_pump,
            args=(child.proc.stdout, prefix, sys.stdout, self.lock, self._watch(child)),
            daemon=True,
        )
        t.start()
        child.threads.append(t)

    def _watch(self, child: Child) -> Callable[[str], None]:
        def on_line(line: str) -> None:
            match = ADMIN_PASSWORD_LINE.search(line)
            if match:
                self.say(
                    f"\033[1m{child.label}: log in as {match.group(1)!r} with password "
                    f"{match.group(2)!r}\033[0m (first start only; it is not shown again)"
                )

        return on_line

    def supervise(self) -> None:
        """Restart crashed services with a growing delay, as a process manager would."""
        while not self.stopping.wait(0.5):
            for child in self.children:
                if child.proc is None or child.proc.poll() is None:
                    if child.proc is None and time.monotonic() >= child.next_start:
                        self.spawn(child)
                    continue
                code = child.proc.returncode
                child.proc = None
                child.restarts += 1
                delay = min(30.0, 2.0 * child.restarts)
                child.next_start = time.monotonic() + delay
                self.say(f"{child.label} exited with {code}; restarting in {delay:.0f} s")

    def on_stop_signal(self, signum: int, _frame: object) -> None:
        if self.stop_requested:
            return  # stopping already: `stop` is bounded (STOP_STEPS)
        self.stop_requested = True
        raise StopRequested(signal.Signals(signum).name)

    def stop(self) -> None:
        self.stop_requested = True
        self.stopping.set()
        procs = {c.label: c.proc for c in self.children if c.proc is not None}
        stopped_by = stop_processes(procs)
        for label, sig in stopped_by.items():
            if sig is not None and sig != STOP_STEPS[0].signal:
                self.say(f"{label} needed {sig.name} (pid {procs[label].pid})")
            elif sig is None and procs[label].poll() is None:
                last = STOP_STEPS[-1].signal.name
                self.say(f"{label} still runs after {last} (pid {procs[label].pid})")
        for bus in self.buses:
            bus.stop()
        if self.broker is not None:
            self.broker.stop()
        self.say("stopped")

    def run(self) -> int:
        for signum in STOP_SIGNALS:  # from the start: a service is never left behind
            signal.signal(signum, self.on_stop_signal)
        try:
            url = self.start_broker()
            self.choose_simulation()
            self.publish_configs(url)
            self.plan_children(url)
            for child in self.children:
                self.spawn(child)
            self.where_to_look(url)
            if self.args.exit_after_s:
                self.stopping.wait(self.args.exit_after_s)
                return 0
            self.supervise()
        except StopRequested as exc:
            self.say(f"{exc}: stopping every service")
        finally:
            self.stop()
            for signum in STOP_SIGNALS:  # a late Ctrl-C does not turn the stop into a crash
                signal.signal(signum, signal.SIG_IGN)
        return 0

    def where_to_look(self, url: str) -> None:
        systems = ", ".join(self.systems)
        first = self.systems[0]
        tap = f"{sys.executable} -m shared.tap"
        protocol = ""
        if self.protocol != DEFAULT_MQTT_PROTOCOL:
            tap += f" --protocol {self.protocol}"
            protocol = f" --mqtt-protocol {self.protocol}"
        self.say(
            "\n".join(
                [
                    f"stack is up: broker {url}, systems {systems}",
                    f"  services:     {', '.join(c.label for c in self.children) or 'none yet'}",
                    *(f"  {e}" for e in self.endpoints),
                    *(
                        [f"  /metrics:      {', '.join(self.metrics_ports)}"]
                        if self.metrics_ports
                        else []
                    ),
                    f"  watch it:     {tap} --mqtt-url {url} 'bms/v1/{first}/#'",
                    *(
                        [
                            f"  inject:       {sys.executable} -m services.plant inject "
                            f"insulation_fault --mqtt-url {url} --system {first}{protocol}"
                        ]
                        if self.in_loop
                        else []
                    ),
                    "  topic tree:   docs/topics.md, docs/asyncapi.yaml",
                    "  stop:         Ctrl-C",
                ]
            )
        )


def site_config(site: str, systems: list[str]) -> SiteConfig:
    """The demo site: every system a string, the defaults otherwise."""
    return SiteConfig.model_validate({"site": site, "strings": [{"system": s} for s in systems]})


def plant_wiring(config: SystemConfig) -> tuple[object, ...]:
    """Where a configuration puts the devices the plant serves."""
    io, monitor = config.contactors.io, config.insulation_monitor
    buses = (config.interfaces.can, config.current_sensor.can, monitor.can)
    return (
        *((b.interface, b.channel) for b in buses),
        monitor.driver,
        (io.transport, io.host, io.tcp_port),
    )


def _port_in_use(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_or(port: int) -> int:
    """`port` when nothing listens there, else a free one."""
    with contextlib.suppress(OSError):
        if not _port_in_use(port):
            return port
    return free_port()


def _describe(config: SystemConfig) -> str:
    topo = config.topology
    return f"{config.chemistry}, {topo.modules} modules x {topo.cells_per_module} cells"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    parser.add_argument(
        "--mqtt-url",
        default=os.environ.get("MQTT_URL") or None,
        help="use this broker instead of starting one (mqtt://host:port)",
    )
    parser.add_argument(
        "--systems",
        type=int,
        default=int(os.environ.get("SYSTEMS", "1")),
        help="number of simulated systems (default 1)",
    )
    parser.add_argument(
        "--broker",
        choices=("auto", "embedded"),
        default="auto",
        help="auto: mosquitto when installed, else the embedded broker",
    )
    parser.add_argument("--broker-port", type=int, default=1883, help="port of the started broker")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="simulate the devices inside the master and the slave agent (no plant service)",
    )
    parser.add_argument(
        "--site",
        default=os.environ.get("SITE") or None,
        help="run the systems as the strings of one site with this id (its site controller "
        "publishes bms/v1/<site>/site/...; at most 16 strings)",
    )
    parser.add_argument(
        "--master-layout",
        choices=("process", "shared"),
        default=os.environ.get("MASTER_LAYOUT", "process"),
        help="process: a master process per system (each isolated, an interpreter each); "
        "shared: one master process hosting every system, each with its own connection, "
        "store and loop thread (less memory and CPU; one crash of the process stops them all)",
    )
    parser.add_argument("--exit-after-s", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.systems <= 50:
        parser.error("--systems must be between 1 and 50")
    if args.site is not None:
        try:
            site_config(args.site, system_ids(args.systems))
        except ValueError as exc:
            parser.error(f"--site: {exc}")
    return Launcher(args).run()
