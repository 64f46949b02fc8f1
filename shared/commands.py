"""Request/reply over the bus: correlation id, reply topic and expiry in the payload.

A command whose expiry has passed is refused, never executed late (MQTT 3.1.1 clients replay
queued QoS 1 messages after a reconnect, so late delivery is a real case). A command runs at most
once per correlation id: a duplicate delivery gets the first reply again (`CommandLedger`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shared.bus.core import BusCore, Delivery
from shared.codec import PayloadError, unpack
from shared.command_ledger import (
    MAX_LIFETIME_S,
    CommandLedger,
    LedgerJournal,
    unknown_outcome,
)
from shared.log_limit import LimitedLog
from shared.messages import COMMAND_ARGS, CommandArgs, CommandHeader, CommandReply, CommandRequest
from shared.topics import COMMAND, COMMAND_REPLY

log = logging.getLogger("shared.commands")
limited = LimitedLog(log, every_s=10.0)


@dataclass(frozen=True)
class CommandOutcome:
    accepted: bool
    reason: str = ""
    result: dict[str, Any] = field(default_factory=dict)


CommandHandler = Callable[[CommandArgs], CommandOutcome]
Admission = Callable[[CommandRequest, float], CommandOutcome | None]
"""Asked before a request runs (request, now): a refusal to reply with instead (a rate limit),
or None to run it."""


def requester(req: CommandRequest) -> str | None:
    """The broker user a request's replies go to (`reply/{user}/{client}`): the only one able
    to read them, so the one a per-requester limit counts against; None when not a reply
    topic."""
    parsed = COMMAND_REPLY.parse(req.reply_to)
    return None if parsed is None else parsed[1]["user"]


def refusal_reason(
    req: CommandRequest, *, topic_command: str, system: str, now: float
) -> str | None:
    """Why a request must not run, or None when it may (pure; the master's gate)."""
    if req.command != topic_command:
        return f"command {req.command!r} does not match its topic ({topic_command!r})"
    if now > req.expires_at:
        return f"expired {now - req.expires_at:.3f} s ago"
    if req.expires_at - now > MAX_LIFETIME_S:
        return (
            f"expires {req.expires_at - now:.0f} s ahead, more than the {MAX_LIFETIME_S:g} s a "
            "command may live (is the sender's clock right?)"
        )
    parsed = COMMAND_REPLY.parse(req.reply_to)
    if parsed is None or parsed[0] != system:
        return f"reply_to {req.reply_to!r} is not a reply topic of system {system!r}"
    return None


def parse_args(command: str, args: dict[str, Any]) -> CommandArgs:
    """Typed arguments of a known command; ValueError with a readable reason otherwise."""
    model = COMMAND_ARGS.get(command)
    if model is None:
        raise ValueError(f"unknown command {command!r}; known: {', '.join(sorted(COMMAND_ARGS))}")
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"invalid arguments for {command}: {problems}") from exc


class CommandServer:
    """Serves `cmd/{command}` for one system with one handler per command."""

    def __init__(
        self,
        bus: BusCore,
        handlers: dict[str, CommandHandler],
        *,
        clock: Callable[[], float] = time.time,
        journal: LedgerJournal | None = None,
        admit: dict[str, Admission] | None = None,
    ) -> None:
        """`journal`: the ledger outlives the process (a request is journalled before it
        runs, so it runs at most once even across a kill). `admit`: per command, a gate asked
        before it runs (a refusal is counted as `commands_rate_limited`)."""
        self.bus = bus
        self.handlers = handlers
        self.admit = admit or {}
        self.clock = clock
        self.ledger = CommandLedger()
        self.journal = journal
        if journal is not None:
            for entry in journal.load_commands(clock(), self.ledger.capacity):
                self.ledger.restore(entry)
        bus.subscribe(COMMAND, self._on_request, on_invalid=self._on_invalid_request)

    def _on_invalid_request(self, topic: str, payload: bytes, err: PayloadError) -> None:
        """A request that failed validation (already counted and logged by the bus) is refused
        in words when its header is readable: the client learns why instead of timing out."""
        try:
            header = CommandHeader.model_validate(unpack(topic, payload, COMMAND.byte_limit))
        except (PayloadError, ValidationError):
            return  # nowhere trustworthy to reply to
        now = self.clock()
        if now > header.expires_at or header.expires_at - now > MAX_LIFETIME_S:
            return
        self.bus.counters["commands_refused"] += 1
        self._reply(header, CommandReply(
            command=header.command, correlation_id=header.correlation_id, status="refused",
            reason=f"invalid request: {err.field}: {err.reason}"[:500],
        ))  # fmt: skip

    def _on_request(self, delivery: Delivery[CommandRequest]) -> None:
        req = delivery.message
        counters = self.bus.counters
        now = self.clock()
        reason = refusal_reason(
            req, topic_command=delivery.params["command"], system=self.bus.system, now=now
        )
        verdict = self.ledger.check(req, now) if reason is None else None
        outcome: CommandOutcome
        if verdict is not None and verdict.reply is not None:
            counters["commands_duplicate"] += 1
            limited.info(
                "duplicate",
                "duplicate %s (%s): first reply sent again (commands_duplicate counts them)",
                req.command,
                req.correlation_id,
            )
            self._reply(req, verdict.reply)
            return
        if reason is not None:
            counters[
                "commands_expired" if reason.startswith("expired") else "commands_refused"
            ] += 1
            outcome = CommandOutcome(False, reason)
        elif verdict is not None and verdict.kind == "reused":
            counters["commands_refused"] += 1
            counters["commands_id_reused"] += 1
            outcome = CommandOutcome(
                False, f"correlation id {req.correlation_id!r} was already used by another request"
            )
        elif (gate := self.admit.get(req.command)) is not None and (
            refused := gate(req, now)
        ) is not None:
            counters["commands_refused"] += 1
            counters["commands_rate_limited"] += 1
            outcome = refused
        else:
            if self.journal is not None:  # before it runs: a kill mid-way cannot run it twice
                self.journal.save_command(self.ledger.record(req, unknown_outcome(req), now))
            try:
                args = parse_args(req.command, req.args)
                handler = self.handlers.get(req.command)
                if handler is None:
                    raise ValueError(f"command {req.command!r} is not served here")
                outcome = handler(args)
            except ValueError as exc:
                outcome = CommandOutcome(False, str(exc))
            counters["commands_accepted" if outcome.accepted else "commands_refused"] += 1
        if not outcome.accepted:
            limited.warning(
                f"refused {req.command} {outcome.reason.split(' ', 1)[0]}",
                "refused %s (%s): %s",
                req.command,
                req.correlation_id,
                outcome.reason,
            )
        reply = CommandReply(
            command=req.command,
            correlation_id=req.correlation_id,
            status="accepted" if outcome.accepted else "refused",
            reason=outcome.reason,
            result=outcome.result,
        )
        if verdict is not None and verdict.kind == "new":
            evicted = self.ledger.evicted
            entry = self.ledger.record(req, reply, now)
            counters["commands_forgotten"] += self.ledger.evicted - evicted
            if self.journal is not None:
                self.journal.save_command(entry)
        self._reply(req, reply)

    def _reply(self, req: CommandRequest | CommandHeader, reply: CommandReply) -> None:
        parsed = COMMAND_REPLY.parse(req.reply_to)
        if parsed is None or parsed[0] != self.bus.system:
            return  # never publish to a topic a client chose freely
        self.bus.publish(COMMAND_REPLY, reply, **parsed[1])


@dataclass
class _Pending:
    expires_at: float
    callback: Callable[[CommandReply | None], None]


class CommandClient:
    """Sends commands and matches replies by correlation id."""

    def __init__(
        self,
        bus: BusCore,
        *,
        clock: Callable[[], float] = time.time,
        user: str | None = None,
        system: str | None = None,
    ) -> None:
        """`user`: the broker user this bus logs in as (default: the bus's own login, else the
        instance name, as every service's), which the reply topic names: the ACL lets that user
        alone read it. `system`: the system whose master it commands (default: the bus's own;
        the site controller commands each of its strings' masters under their ids, and a
        master replies only on a reply topic of its own system)."""
        self.bus = bus
        self.clock = clock
        self.system = system or bus.system
        self.user = user or bus.broker_user or bus.service
        self.client = uuid.uuid4().hex[:12]
        self.reply_topic = COMMAND_REPLY.topic(self.system, user=self.user, client=self.client)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        bus.subscribe(
            COMMAND_REPLY, self._on_reply, system=self.system, user=self.user, client=self.client
        )

    def send(
        self,
        command: str,
        args: CommandArgs | None = None,
        *,
        ttl_s: float = 5.0,
        on_reply: Callable[[CommandReply | None], None] | None = None,
    ) -> str:
        """Publish a request; `on_reply` gets the reply, or None once it has expired."""
        cid = uuid.uuid4().hex
        expires_at = self.clock() + ttl_s
        if on_reply is not None:
            with self._lock:
                self._pending[cid] = _Pending(expires_at, on_reply)
        req = CommandRequest(
            command=command,
            correlation_id=cid,
            reply_to=self.reply_topic,
            expires_at=expires_at,
            args=args.model_dump() if args is not None else {},
        )
        self.bus.publish(COMMAND, req, system=self.system, command=command)
        return cid

    def _send_awaited(
        self, command: str, args: CommandArgs | None, *, ttl_s: float = 5.0
    ) -> tuple[threading.Event, list[CommandReply | None]]:
        """Send; the event is set once the reply (or None at the expiry) is in the list."""
        done = threading.Event()
        box: list[CommandReply | None] = []

        def got(reply: CommandReply | None) -> None:
            box.append(reply)
            done.set()

        self.send(command, args, ttl_s=ttl_s, on_reply=got)
        return done, box

    def request(
        self, command: str, args: CommandArgs | None = None, *, ttl_s: float = 5.0
    ) -> CommandReply | None:
        """Send and wait for the reply, driving the bus from this thread."""
        done, box = self._send_awaited(command, args, ttl_s=ttl_s)
        deadline = time.monotonic() + ttl_s
        while not done.is_set() and time.monotonic() < deadline:
            self.bus.process(timeout_s=0.05)
        self.expire()
        return box[0] if box else None

    def request_pumped(
        self, command: str, args: CommandArgs | None = None, *, wait_s: float = 6.0
    ) -> CommandReply | None:
        """Send and wait for the reply while another thread processes the bus."""
        done, box = self._send_awaited(command, args)
        done.wait(wait_s)
        self.expire()
        return box[0] if box else None

    async def request_async(
        self, command: str, args: CommandArgs | None = None, *, ttl_s: float = 5.0
    ) -> CommandReply | None:
        """Send and await the reply; the bus must be processed by the service's loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CommandReply | None] = loop.create_future()

        def resolve(reply: CommandReply | None) -> None:
            if not future.done():
                future.set_result(reply)

        def got(reply: CommandReply | None) -> None:
            loop.call_soon_threadsafe(resolve, reply)

        self.send(command, args, ttl_s=ttl_s, on_reply=got)
        try:
            return await asyncio.wait_for(future, ttl_s)
        except TimeoutError:
            self.expire()
            return None

    def expire(self) -> int:
        """Give up on requests past their expiry; returns how many."""
        now = self.clock()
        with self._lock:
            late = [cid for cid, p in self._pending.items() if p.expires_at < now]
            gone = [self._pending.pop(cid) for cid in late]
        for p in gone:
            p.callback(None)
        return len(gone)

    def _on_reply(self, delivery: Delivery[CommandReply]) -> None:
        with self._lock:
            pending = self._pending.pop(delivery.message.correlation_id, None)
        if pending is None:
            self.bus.counters["replies_unmatched"] += 1
            return
        pending.callback(delivery.message)
