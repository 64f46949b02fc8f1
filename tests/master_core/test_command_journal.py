"""The command ledger outlives the master: a request replayed after a restart never runs again.

Found by bench/chaos.py: a captured `contactors close` published again after a master kill
(within its expiry) closed the contactors a second time, since the ledger lived in memory."""

from __future__ import annotations

from pathlib import Path

from services.master_core.stores import Store
from shared.bus import InMemoryBroker, InMemoryBus
from shared.command_ledger import REMEMBER_S, CommandLedger, unknown_outcome
from shared.commands import CommandOutcome, CommandServer
from shared.messages import CommandArgs, CommandReply, CommandRequest
from shared.topics import COMMAND, COMMAND_REPLY


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def request(cid: str) -> CommandRequest:
    return CommandRequest(
        command="contactors", correlation_id=cid,
        reply_to=COMMAND_REPLY.topic("demo", user="config_ui", client="ui-1"), expires_at=1_100.0,
        args={"action": "close"},
    )  # fmt: skip


class Master:
    """One master process: a bus, a command server on the store's journal, a handler."""

    def __init__(self, broker: InMemoryBroker, path: Path, clock: Clock) -> None:
        self.store = Store(path)
        self.bus = InMemoryBus(broker, system="demo", service="master_core", kind="master",
                               clock=clock)  # fmt: skip
        self.bus.start()
        self.executed: list[CommandArgs] = []
        self.server = CommandServer(self.bus, {"contactors": self.handle}, clock=clock,
                                    journal=self.store)  # fmt: skip

    def handle(self, args: CommandArgs) -> CommandOutcome:
        self.executed.append(args)
        return CommandOutcome(True, result={"n": len(self.executed)})

    def stop(self) -> None:
        self.bus.stop()
        self.store.close()


def deliver(broker: InMemoryBroker, master: Master, req: CommandRequest) -> CommandReply:
    sender = InMemoryBus(broker, system="demo", service="ui", kind="ui")
    replies: list[CommandReply] = []
    sender.subscribe(
        COMMAND_REPLY, lambda d: replies.append(d.message), user="config_ui", client="ui-1"
    )
    sender.start()
    sender.publish(COMMAND, req, command="contactors")
    master.bus.process()
    sender.process()
    sender.stop()
    assert len(replies) == 1
    return replies[0]


def test_a_request_replayed_after_a_restart_gets_its_first_reply_and_never_runs(
    tmp_path: Path,
) -> None:
    broker, clock, path = InMemoryBroker(), Clock(), tmp_path / "master.sqlite"
    first = Master(broker, path, clock)
    req = request("c1")
    got = deliver(broker, first, req)
    assert got.status == "accepted" and len(first.executed) == 1
    first.stop()  # a kill: the rows are written before the reply is sent
    clock.now += 30.0
    second = Master(broker, path, clock)
    again = deliver(broker, second, req)
    assert second.executed == []
    assert (again.status, again.result) == ("accepted", {"n": 1})
    assert second.bus.counters["commands_duplicate"] == 1
    # another request still runs
    assert deliver(broker, second, request("c2")).status == "accepted"
    assert len(second.executed) == 1
    second.stop()


def test_a_request_the_master_died_running_is_refused_after_the_restart(tmp_path: Path) -> None:
    broker, clock, path = InMemoryBroker(), Clock(), tmp_path / "master.sqlite"
    req = request("c1")
    store = Store(path)  # journalled before it ran; the process died before the reply
    store.save_command(CommandLedger().record(req, unknown_outcome(req), clock.now))
    store.close()
    master = Master(broker, path, clock)
    got = deliver(broker, master, req)
    assert master.executed == []
    assert got.status == "refused" and got.reason.startswith("outcome unknown"), got
    master.stop()


def test_forgotten_requests_are_not_loaded(tmp_path: Path) -> None:
    clock, path = Clock(), tmp_path / "master.sqlite"
    store = Store(path)
    store.save_command(CommandLedger().record(request("old"), unknown_outcome(request("old")),
                                              clock.now))  # fmt: skip
    store.save_command(CommandLedger().record(request("new"), unknown_outcome(request("new")),
                                              clock.now + 100))  # fmt: skip
    loaded = store.load_commands(clock.now + REMEMBER_S + 1, limit=10)
    assert [e.correlation_id for e in loaded] == ["new"]
    assert [e.correlation_id for e in store.load_commands(0.0, limit=1)] == ["new"]
    store.close()
