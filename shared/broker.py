"""Run an MQTT broker for the stack launcher and the tests.

`MosquittoBroker` runs a real mosquitto subprocess (the reference broker, MQTT 5 and 3.1.1).
`EmbeddedBroker` runs amqtt in-process as a fallback on machines without mosquitto; amqtt speaks
MQTT 3.1.1 only and refuses MQTT 5 CONNECTs.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from shared.parent_death import with_parent_death
from shared.ports import free_port
from shared.topics import BROKER_MESSAGE_SIZE_LIMIT

__all__ = [
    "LATENCY_SETTINGS",
    "PERSISTENCE_SETTINGS",
    "BrokerStartError",
    "EmbeddedBroker",
    "MosquittoBroker",
    "find_mosquitto",
    "free_port",
    "wait_for_mqtt",
    "wait_for_port",
]

# Debian installs mosquitto in sbin, which is not on a normal user's PATH.
_MOSQUITTO_FALLBACK_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
_START_TIMEOUT_S = 5.0
_POLL_S = 0.05

# MQTT 3.1.1 CONNECT (clean session, keepalive 0, empty client id) and DISCONNECT.
_MQTT311_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x00\x00\x00"
_MQTT_DISCONNECT = b"\xe0\x00"
_CONNACK_ACCEPTED = b"\x20\x02\x00\x00"


LATENCY_SETTINGS = ("set_tcp_nodelay true",)
"""The broker sends at once rather than batching small writes (Nagle's algorithm): a trip or
telemetry message is one small packet, and the bus adapter sets TCP_NODELAY on the clients'
side too. deploy/mosquitto/mosquitto.conf says the same (a test checks)."""

PERSISTENCE_SETTINGS = ("autosave_on_changes true", "autosave_interval 1")
"""How the stack's mosquitto saves its database (deploy/mosquitto/mosquitto.conf says the
same, a test checks): after every change (a queued QoS 1 message for an offline persistent
session, a retained message, a subscription), not once every `autosave_interval` seconds. With
the default-style `autosave_interval 60`, a SIGKILL lost every event queued in the last minute
for an offline persistent subscriber (6 of 6 in tests/system/test_event_persistence.py).
The cost is a rewrite of the whole (small) file per change: about 20 a second in a running
stack, whose pack state and cells are retained at 10 Hz each (measured: 196 retained
publishes, 196 saves)."""


class BrokerStartError(RuntimeError):
    """The broker did not come up."""


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, or None if it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in _MOSQUITTO_FALLBACK_PATHS:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout_s: float = _START_TIMEOUT_S,
    *,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until host:port accepts TCP connections.

    Raises TimeoutError after timeout_s, or BrokerStartError as soon as `alive()` returns False
    (so a server process that died is reported at once, not after the timeout).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if alive is not None and not alive():
            raise BrokerStartError(f"server for {host}:{port} exited during start-up")
        if _port_accepts(host, port):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections within {timeout_s:.1f} s")
        time.sleep(_POLL_S)


def _mqtt_handshake(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(_MQTT311_CONNECT)
            reply = b""
            while len(reply) < len(_CONNACK_ACCEPTED):
                chunk = sock.recv(len(_CONNACK_ACCEPTED) - len(reply))
                if not chunk:
                    return False
                reply += chunk
            if reply != _CONNACK_ACCEPTED:
                return False
            sock.sendall(_MQTT_DISCONNECT)
            return True
    except OSError:
        return False


def wait_for_mqtt(host: str, port: int, timeout_s: float = _START_TIMEOUT_S) -> None:
    """Block until an MQTT 3.1.1 CONNECT to host:port is accepted (CONNACK 0).

    Stronger than `wait_for_port`, and a clean CONNECT/DISCONNECT does not make amqtt log an
    error the way a bare TCP probe does.
    """
    deadline = time.monotonic() + timeout_s
    while not _mqtt_handshake(host, port):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no MQTT broker answered on {host}:{port} within {timeout_s:.1f} s")
        time.sleep(_POLL_S)


# Brokers still running when the interpreter exits (a test run aborted with Ctrl-C) are killed,
# so they do not keep their ports.
_live_processes: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live_processes):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _live_processes.clear()


class MosquittoBroker:
    """A mosquitto subprocess on a fixed loopback port; restartable on the same port."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        persistence_dir: Path | None = None,
        extra_config: str = "",
        executable: str | None = None,
        dies_with_parent: bool = False,
    ) -> None:
        """`dies_with_parent`: mosquitto gets SIGTERM when this process ends, even killed
        outright (shared/parent_death.py; start it from the main thread). Such a broker is
        this process's to stop, so it runs in a session of its own: a terminal's Ctrl-C reaches
        this process alone, which stops its clients first and the broker last."""
        exe = executable or find_mosquitto()
        if exe is None:
            raise FileNotFoundError(
                "mosquitto not found; install it with `apt-get install mosquitto`"
            )
        self._exe = exe
        self._host = host
        # Pinned now so that restart() comes back on the same port.
        self._port = port if port is not None else free_port(host)
        self._persistence_dir = persistence_dir
        self._workdir = Path(tempfile.mkdtemp(prefix="bms-mosquitto-"))
        self._config_path = self._workdir / "mosquitto.conf"
        self._log_path = self._workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._dies_with_parent = dies_with_parent
        self._config_path.write_text(self._render_config(extra_config))

    def _render_config(self, extra_config: str) -> str:
        lines = [
            f"listener {self._port} {self._host}",
            "allow_anonymous true",
            # as deploy/mosquitto/mosquitto.conf: the broker drops any payload over the largest
            # topic limit (the bus refuses payloads over their own topic's limit)
            f"message_size_limit {BROKER_MESSAGE_SIZE_LIMIT}",
            "log_dest stderr",
            "log_timestamp_format %H:%M:%S",
            *LATENCY_SETTINGS,
        ]
        # Started as root, mosquitto 2 drops to user "mosquitto", which cannot write our temp dirs.
        if os.geteuid() == 0:
            lines.append("user root")
        if self._persistence_dir is not None:
            self._persistence_dir.mkdir(parents=True, exist_ok=True)
            lines += [
                "persistence true",
                # mosquitto concatenates location and file name: trailing slash required.
                f"persistence_location {self._persistence_dir.resolve()}/",
                *PERSISTENCE_SETTINGS,
            ]
        else:
            lines.append("persistence false")
        if extra_config.strip():
            lines.append(extra_config.strip())
        return "\n".join(lines) + "\n"

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"mqtt://{self._host}:{self._port}"

    @property
    def config_path(self) -> Path:
        return self._config_path

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Start mosquitto and wait until its port accepts connections."""
        if self.running:
            raise RuntimeError(f"mosquitto already running on {self.url}")
        # Appending keeps the log of earlier runs across restarts.
        argv = [self._exe, "-c", str(self._config_path)]
        with self._log_path.open("ab") as log:
            proc = subprocess.Popen(
                with_parent_death(argv) if self._dies_with_parent else argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self._dies_with_parent,
            )
        self._proc = proc
        _live_processes.add(proc)
        try:
            wait_for_port(self._host, self._port, timeout_s, alive=lambda: proc.poll() is None)
        except (TimeoutError, BrokerStartError) as exc:
            self._terminate(signal.SIGKILL, 1.0)
            raise BrokerStartError(
                f"mosquitto did not start on {self.url} ({exc}); log tail:\n{self.log_tail()}"
            ) from exc

    def _terminate(self, sig: signal.Signals, timeout_s: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _live_processes.discard(proc)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Graceful stop (SIGTERM, so persistence is written), SIGKILL if it hangs."""
        self._terminate(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """Crash the broker (SIGKILL): no will flush, no persistence save."""
        self._terminate(signal.SIGKILL, 5.0)

    def restart(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start(timeout_s)

    def close(self) -> None:
        """Stop and remove the config/log directory."""
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"MosquittoBroker({self.url}, {state})"


# amqtt logs routine events (every connection, probe, plugin load) at INFO/WARNING.
_AMQTT_LOGGERS = ("amqtt", "transitions")


def quiet_amqtt_logging(level: int = logging.ERROR) -> None:
    for name in _AMQTT_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _amqtt_broker_class() -> Any:
    # Imported lazily: amqtt is an optional extra.
    from amqtt.broker import Broker

    class _Broker(Broker):  # type: ignore[misc]
        """amqtt 0.12.1 with its retained-message replay fixed.

        Stock 0.12.1 sends each newly connected client the retained messages matching every
        topic filter any *other* client subscribed to, and delivers retained QoS 0 messages at
        the subscriber's QoS (`retained.qos or qos`). Here a client only gets retained messages
        for its own subscriptions, at min(granted QoS, retained QoS).
        """

        async def _publish_retained_messages_for_subscription(
            self, subscription: tuple[str, int], session: Any
        ) -> None:
            topic_filter = subscription[0]
            granted = [
                qos
                for sub_session, qos in self._subscriptions.get(topic_filter, [])
                if sub_session.client_id == session.client_id
            ]
            handler = self._get_handler(session)
            if not granted or handler is None:
                return
            tasks = [
                asyncio.create_task(
                    handler.mqtt_publish(
                        msg.topic, msg.data, min(granted[0], msg.qos or 0), retain=True
                    )
                )
                for topic, msg in list(self._retained_messages.items())
                if self._matches(topic, topic_filter)
            ]
            if tasks:
                await asyncio.wait(tasks)

    return _Broker


class EmbeddedBroker:
    """amqtt broker (MQTT 3.1.1 only) in a background thread with its own event loop.

    Limits of amqtt 0.12.1 to keep in mind: MQTT 5 CONNECTs get "unsupported protocol version";
    client keepalive is not enforced, so a half-open client (cut link, power loss) is never
    dropped and its will never fires. Closed or reset connections do trigger the will.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self._host = host
        self._port = port if port is not None else free_port(host)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"mqtt://{self._host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self._host}:{self._port}"}},
            # An explicit plugin list replaces amqtt's defaults (event/packet loggers and the
            # $SYS plugin, which warns about psutil); anonymous auth is all we need.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    def start(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Start the broker thread and wait until the broker answers an MQTT CONNECT."""
        if self.running:
            raise RuntimeError(f"embedded broker already running on {self.url}")
        quiet_amqtt_logging()
        self._ready.clear()
        self._start_error = None
        self._thread = threading.Thread(
            target=self._thread_main, name=f"amqtt-broker-{self._port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise BrokerStartError(f"amqtt broker did not start on {self.url} in {timeout_s:.1f} s")
        if self._start_error is not None:
            self._thread.join(timeout_s)
            raise BrokerStartError(
                f"amqtt broker failed to start on {self.url}: {self._start_error!r}"
            ) from self._start_error
        try:
            wait_for_mqtt(self._host, self._port, timeout_s)
        except TimeoutError as exc:
            self.stop()
            raise BrokerStartError(str(exc)) from exc

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        finally:
            # Unblock start() if the loop died before signalling.
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        try:
            # amqtt's Broker grabs the running loop in __init__, so it must be built in here.
            broker = _amqtt_broker_class()(self.config())
            await broker.start()
        except Exception as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await broker.shutdown()

    def stop(self, timeout_s: float = 5.0) -> None:
        thread, loop, stop_requested = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and stop_requested is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed in between
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join(timeout_s)
        if thread.is_alive():
            raise RuntimeError(f"amqtt broker on {self.url} did not stop in {timeout_s:.1f} s")
        self._thread = self._loop = self._stop_requested = None

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker({self.url}, {state})"
