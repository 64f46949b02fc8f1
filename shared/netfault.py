"""In-process TCP proxy that injects network faults between an MQTT client and its broker.

Modes:
- pass: bytes are forwarded both ways.
- blackhole: sockets stay open but every byte is dropped in both directions and closes are not
  passed on (no FIN, no RST), like a cut cable or a dead switch: peers notice only through their
  keepalive.
- reset: current connections are aborted with RST on both sides, new ones are accepted and reset
  at once; peers notice immediately.

Connections that were blackholed have lost bytes and cannot resume; they stay dead after
`restore()` until their peers give up. New connections after `restore()` pass normally.
No root and no extra binaries; it only listens on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import socket
import struct
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = ["ProxyMode", "TcpFaultProxy"]

_T = TypeVar("_T")
_CHUNK = 65536
_CALL_TIMEOUT_S = 5.0
# SO_LINGER on, timeout 0: close() sends RST instead of FIN.
_LINGER_RST = struct.pack("ii", 1, 0)


class ProxyMode(enum.StrEnum):
    PASS = "pass"
    BLACKHOLE = "blackhole"
    RESET = "reset"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


class _Link:
    """One proxied client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.blackholed = False

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


class TcpFaultProxy:
    """TCP proxy listening on loopback, forwarding to target_host:target_port.

    Starts listening on construction; control methods are thread-safe and return once the
    change is applied to all current connections.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        listen_host: str = "127.0.0.1",
        listen_port: int | None = None,
    ) -> None:
        if not _is_loopback(listen_host):
            raise ValueError(f"TcpFaultProxy only listens on loopback, not {listen_host!r}")
        self._target = (target_host, target_port)
        self._listen_host = listen_host
        self._mode = ProxyMode.PASS
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run_loop, name=f"tcp-fault-proxy-{target_port}", daemon=True
        )
        self._thread.start()
        try:
            self._port: int = self._call(self._start_server(listen_port or 0))
        except BaseException:
            self._stop_loop()
            raise

    # -- public API (any thread) -------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._listen_host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"mqtt://{self._listen_host}:{self._port}"

    @property
    def target(self) -> tuple[str, int]:
        return self._target

    @property
    def mode(self) -> ProxyMode:
        return self._mode

    @property
    def active_connections(self) -> int:
        return self._call(self._count_links())

    def blackhole(self) -> None:
        """Drop all bytes both ways on current and new connections; never send FIN or RST."""
        self._call(self._set_mode(ProxyMode.BLACKHOLE))

    def reset(self) -> None:
        """RST all current connections; accept-and-RST new ones until restore()."""
        self._call(self._set_mode(ProxyMode.RESET))

    def restore(self) -> None:
        """Forward new connections again (blackholed ones stay dead)."""
        self._call(self._set_mode(ProxyMode.PASS))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._stop_loop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TcpFaultProxy({self.url} -> {self._target[0]}:{self._target[1]}, {self._mode})"

    # -- loop plumbing -----------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _stop_loop(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_CALL_TIMEOUT_S)
            if not self._thread.is_alive():
                self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if not self._thread.is_alive():
            coro.close()
            raise RuntimeError("proxy is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(_CALL_TIMEOUT_S)

    # -- coroutines run on the proxy loop ----------------------------------------------------

    async def _start_server(self, port: int) -> int:
        self._server = await asyncio.start_server(self._on_client, self._listen_host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    def _mode_now(self) -> ProxyMode:
        # A call, so type checkers do not carry a narrowed self._mode across an await.
        return self._mode

    async def _count_links(self) -> int:
        return len(self._links)

    async def _set_mode(self, mode: ProxyMode) -> None:
        self._mode = mode
        if mode is ProxyMode.BLACKHOLE:
            for link in self._links:
                link.blackholed = True
        elif mode is ProxyMode.RESET:
            for link in list(self._links):
                for writer in link.writers():
                    _abort_with_rst(writer)
            # Gone now, even if their handlers only notice on the next loop iteration.
            self._links.clear()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            for writer in link.writers():
                writer.transport.abort()
        # Let handlers finish on the aborts so no task is left pending when the loop stops.
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)
        self._server = None

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode is ProxyMode.RESET:
            _abort_with_rst(writer)
            return
        link = _Link(writer)
        self._links.add(link)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            if self._mode is ProxyMode.BLACKHOLE:
                link.blackholed = True
                await self._pump(reader, None, link)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
            except OSError:
                # Upstream down: a refused connect looks like an RST to the client.
                _abort_with_rst(writer)
                return
            link.upstream = up_writer
            # The mode may have changed while connecting (reset() has already aborted the
            # client side then; blackhole() has already marked the link).
            if self._mode_now() is ProxyMode.RESET:
                _abort_with_rst(up_writer)
                return
            await asyncio.gather(
                self._pump(reader, up_writer, link, src_writer=writer),
                self._pump(up_reader, writer, link, src_writer=up_writer),
            )
        finally:
            self._links.discard(link)
            if task is not None:
                self._handlers.discard(task)
            for w in link.writers():
                w.close()

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter | None,
        link: _Link,
        *,
        src_writer: asyncio.StreamWriter | None = None,
    ) -> None:
        try:
            while data := await src.read(_CHUNK):
                if link.blackholed or dst is None:
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        if link.blackholed:
            # A dead link does not carry the close to the other side; drop only this socket.
            if src_writer is not None:
                src_writer.close()
        else:
            for w in link.writers():
                w.close()
