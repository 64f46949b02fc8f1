"""Run a RabbitMQ cluster (the fleet's central tier) on one machine, for tests and benches.

Each node is a `rabbitmq-server` process with its own node name, ports (AMQP, MQTT, Erlang
distribution), data and log directories; all share one Erlang cookie and one private epmd
port (`ERL_EPMD_PORT`), so a cluster never meets another one on the same machine. Nodes 2..n
join node 1 (`rabbitmqctl join_cluster`), as the clustering guide describes for one host
(https://www.rabbitmq.com/clustering.html#single-machine).

The node configuration is `shared.deploy.fleet.rabbitmq_conf` (the same generator as
deploy/fleet/rabbitmq.conf), with the MQTT plugin enabled and per-site users made by
`add_site_user`. The Debian package (`rabbitmq-server`, 3.10 on bookworm) is used as it is,
without its system service: the scripts under its lib directory run as the calling user.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from shared.broker import BrokerStartError, free_port, wait_for_port
from shared.deploy.fleet import rabbitmq_conf, site_topic_permissions

__all__ = [
    "RabbitCluster",
    "RabbitNode",
    "RabbitStartError",
    "find_rabbitmq",
]

_SBIN_GLOB = "/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin"
_START_TIMEOUT_S = 120.0
"""Generous: three Erlang VMs booting on two shared cores take 10-30 s."""
_CTL_TIMEOUT_S = 90.0


class RabbitStartError(RuntimeError):
    """A node did not come up or did not join."""


def find_rabbitmq() -> Path | None:
    """The package's sbin directory (rabbitmq-server, rabbitmqctl), or None if not installed.

    /usr/sbin/rabbitmq-server is a wrapper that switches to the `rabbitmq` user and its fixed
    directories; the scripts it wraps take everything from the environment."""
    for sbin in sorted(Path("/").glob(_SBIN_GLOB.lstrip("/")), reverse=True):
        if (sbin / "rabbitmq-server").is_file():
            return sbin
    return None


_live: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _live.clear()


@dataclass(frozen=True)
class NodePorts:
    amqp: int
    mqtt: int
    dist: int
    mqtts: int | None = None


class RabbitNode:
    """One RabbitMQ node (an Erlang VM) with its own directories under `base`."""

    def __init__(
        self,
        index: int,
        base: Path,
        ports: NodePorts,
        *,
        epmd_port: int,
        sbin: Path,
        tls_dir: Path | None = None,
    ) -> None:
        self.index = index
        self.name = f"fleet{index}@localhost"
        self.ports = ports
        self._base = base / f"node{index}"
        self._home = base / "home"
        self._epmd_port = epmd_port
        self._sbin = sbin
        self._proc: subprocess.Popen[bytes] | None = None
        self._base.mkdir(parents=True, exist_ok=True)
        (self._base / "rabbitmq.conf").write_text(
            rabbitmq_conf(
                amqp_listener=f"127.0.0.1:{ports.amqp}",
                mqtt_listener=f"127.0.0.1:{ports.mqtt}",
                mqtt_tls_listener=None if ports.mqtts is None else f"127.0.0.1:{ports.mqtts}",
                tls_dir=str(tls_dir),
                log_file=str(self._base / "log" / "rabbit.log"),
            )
        )
        (self._base / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")

    @property
    def mqtt_port(self) -> int:
        return self.ports.mqtt

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def env(self) -> dict[str, str]:
        b = self._base
        return {
            **os.environ,
            "HOME": str(self._home),  # the shared .erlang.cookie
            "ERL_EPMD_PORT": str(self._epmd_port),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.ports.amqp),
            "RABBITMQ_DIST_PORT": str(self.ports.dist),
            "RABBITMQ_CONF_ENV_FILE": str(b / "rabbitmq-env.conf"),  # absent: no system env
            "RABBITMQ_CONFIG_FILE": str(b / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(b / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(b / "mnesia"),
            "RABBITMQ_LOG_BASE": str(b / "log"),
            "RABBITMQ_PID_FILE": str(b / "rabbit.pid"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(b / "plugins-expand"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(b / "feature_flags"),
            "RABBITMQ_QUORUM_DIR": str(b / "quorum"),
            "RABBITMQ_STREAM_DIR": str(b / "stream"),
            # CLI tools' own distribution ports, apart from every node's
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self.ports.dist + 1000),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(self.ports.dist + 1010),
        }

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for path in (self._base / "stdout.log", self._base / "log" / "rabbit.log"):
            with contextlib.suppress(FileNotFoundError):
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)

    def start(self) -> None:
        """Start the VM (returns at once; `wait_mqtt` waits for the MQTT listener)."""
        if self.running:
            raise RuntimeError(f"{self.name} already running")
        with (self._base / "stdout.log").open("ab") as log:
            self._proc = subprocess.Popen(
                [str(self._sbin / "rabbitmq-server")],
                env=self.env(),
                cwd=self._base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: epmd and erl_child_setup too
            )
        _live.add(self._proc)

    def wait_mqtt(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Until the MQTT listener accepts connections (a TCP probe: anonymous MQTT logins
        are refused, and the listener opens last in the boot)."""
        try:
            wait_for_port("127.0.0.1", self.ports.mqtt, timeout_s, alive=lambda: self.running)
        except (TimeoutError, BrokerStartError) as exc:
            raise RabbitStartError(f"{self.name}: {exc}; log tail:\n{self.log_tail()}") from exc

    def ctl(self, *args: str, timeout_s: float = _CTL_TIMEOUT_S) -> str:
        """rabbitmqctl against this node; its stdout. Raises on a non-zero exit."""
        done = subprocess.run(
            [str(self._sbin / "rabbitmqctl"), "-n", self.name, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.returncode != 0:
            raise RabbitStartError(
                f"rabbitmqctl {' '.join(args)} on {self.name} failed ({done.returncode}): "
                f"{done.stdout.strip()} {done.stderr.strip()}"
            )
        return done.stdout

    def kill(self) -> None:
        """Crash the node: SIGKILL to its whole process group (the VM and its helpers)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _live.discard(proc)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful stop (SIGTERM), a kill if it hangs."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        self.kill()


class RabbitCluster:
    """`size` RabbitMQ nodes on loopback, clustered, the MQTT plugin on each.

    The cluster's epmd (Erlang's port mapper, on a private `ERL_EPMD_PORT`) is a child of
    this process; `close()` kills it and every node's process group, and removes the
    directories."""

    def __init__(
        self, size: int = 3, *, base: Path | None = None, tls_dir: Path | None = None
    ) -> None:
        """`tls_dir`: ca.crt, server.crt, server.key for an MQTT TLS listener on each node
        (`RabbitNode.ports.mqtts`) beside the plain one."""
        sbin = find_rabbitmq()
        if sbin is None:
            raise FileNotFoundError(
                "rabbitmq-server not found; install it with `apt-get install rabbitmq-server`"
            )
        self._own_base = base is None
        self.base = base or Path(tempfile.mkdtemp(prefix="bms-rabbit-"))
        home = self.base / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        epmd_port = self._epmd_port = free_port()
        self._epmd: subprocess.Popen[bytes] | None = None
        self.nodes = [
            RabbitNode(
                i + 1,
                self.base,
                NodePorts(
                    free_port(),
                    free_port(),
                    free_port(),
                    None if tls_dir is None else free_port(),
                ),
                epmd_port=epmd_port,
                sbin=sbin,
                tls_dir=tls_dir,
            )
            for i in range(size)
        ]

    @property
    def mqtt_ports(self) -> list[int]:
        return [n.mqtt_port for n in self.nodes]

    def _start_epmd(self) -> None:
        """Our own epmd in the foreground, a child we stop in `close()`: a VM that finds none
        starts `epmd -daemon`, which detaches and would outlive the cluster."""
        exe = shutil.which("epmd") or next(iter(Path("/usr/lib/erlang").glob("erts-*/bin/epmd")))
        epmd = self._epmd = subprocess.Popen(
            [str(exe), "-port", str(self._epmd_port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _live.add(epmd)
        wait_for_port("127.0.0.1", self._epmd_port, 10.0, alive=lambda: epmd.poll() is None)

    def start(self) -> None:
        """Start epmd and every node, join nodes 2..n to node 1, wait until all run."""
        self._start_epmd()
        first, *others = self.nodes
        first.start()
        first.wait_mqtt()
        for node in others:
            node.start()
        with ThreadPoolExecutor(len(others) or 1) as pool:
            list(pool.map(lambda n: n.wait_mqtt(), others))
        for node in others:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
            node.wait_mqtt()
        self.wait_running(len(self.nodes))

    def running_nodes(self, via: RabbitNode | None = None) -> list[str]:
        node = via or next(n for n in self.nodes if n.running)
        status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
        return sorted(status["running_nodes"])

    def wait_running(self, count: int, timeout_s: float = _START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if len(self.running_nodes()) == count:
                    return
            except RabbitStartError:
                pass
            if time.monotonic() > deadline:
                raise RabbitStartError(f"cluster did not reach {count} running nodes")
            time.sleep(1.0)

    def add_site_user(self, site: str, password: str) -> None:
        """A broker user for one site's bridge: it may publish under `fleet/{site}/` only."""
        node = next(n for n in self.nodes if n.running)
        node.ctl("add_user", site, password)
        configure, write, read = site_topic_permissions(site).vhost
        node.ctl("set_permissions", "-p", "/", site, configure, write, read)
        t_write, t_read = site_topic_permissions(site).topic
        node.ctl("set_topic_permissions", "-p", "/", site, "amq.topic", t_write, t_read)

    def add_reader(self, user: str, password: str) -> None:
        """A broker user that reads every site's `fleet/...` topics (the fleet view)."""
        node = next(n for n in self.nodes if n.running)
        node.ctl("add_user", user, password)
        node.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        node.ctl("set_topic_permissions", "-p", "/", user, "amq.topic", "^$", "^fleet\\..*")

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.kill()
        if self._epmd is not None:
            self._epmd.kill()
            self._epmd.wait()
            _live.discard(self._epmd)
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m shared.rabbitmq [--nodes 3] [--site ID:PASSWORD ...] [--reader U:P]`: a
    cluster on this machine until Ctrl-C (a demo of the central tier; printed: the ports)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m shared.rabbitmq", description=main.__doc__)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--site", action="append", default=[], metavar="ID:PASSWORD")
    parser.add_argument("--reader", metavar="USER:PASSWORD")
    args = parser.parse_args(argv)
    with RabbitCluster(args.nodes) as cluster:
        for item in args.site:
            site, password = item.split(":", 1)
            cluster.add_site_user(site, password)
        if args.reader:
            user, password = args.reader.split(":", 1)
            cluster.add_reader(user, password)
        for node in cluster.nodes:
            print(f"{node.name}: MQTT 127.0.0.1:{node.mqtt_port}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while all(n.running for n in cluster.nodes):
                time.sleep(1.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
