"""Request/reply: correlation, expiry, validation, and the reply-topic guard."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import SCHEMA_VERSION
from shared.bus import InMemoryBroker, InMemoryBus, MqttBus
from shared.command_ledger import MAX_LIFETIME_S
from shared.commands import (
    CommandClient,
    CommandOutcome,
    CommandServer,
    parse_args,
    refusal_reason,
)
from shared.messages import (
    CommandArgs,
    CommandReply,
    CommandRequest,
    ContactorsArgs,
    ResetFaultsArgs,
    SetModeArgs,
)
from shared.settings import MqttEndpoint
from shared.topics import COMMAND, COMMAND_REPLY


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request(expires_at: float, **kw: object) -> CommandRequest:
    base: dict[str, object] = dict(
        command="contactors", correlation_id="c1", reply_to="bms/v1/demo/reply/config_ui/ui-1",
        expires_at=expires_at, args={"action": "close"}, source="ui", seq=0, ts=1.0,
    )  # fmt: skip
    return CommandRequest.model_validate(base | kw)


@given(st.floats(0, 1e9), st.floats(0, 1e9))
def test_expired_requests_are_refused_and_fresh_ones_pass(expires_at: float, now: float) -> None:
    reason = refusal_reason(request(expires_at), topic_command="contactors", system="demo", now=now)
    if now > expires_at:
        assert reason is not None and reason.startswith("expired")
    elif expires_at - now > MAX_LIFETIME_S:
        assert reason is not None and "may live" in reason
    else:
        assert reason is None


def test_reply_topic_of_another_system_or_tree_is_refused() -> None:
    for reply_to in (
        "bms/v1/other/reply/config_ui/x",
        "bms/v1/demo/reply/x",
        "bms/v1/demo/cmd/contactors",
        "elsewhere",
    ):
        reason = refusal_reason(
            request(1050.0, reply_to=reply_to),
            topic_command="contactors",
            system="demo",
            now=1000.0,
        )
        assert reason is not None and "reply_to" in reason


def test_command_must_match_its_topic() -> None:
    reason = refusal_reason(request(2000.0), topic_command="set_mode", system="demo", now=0.0)
    assert reason is not None and "does not match" in reason


@pytest.mark.parametrize(
    ("command", "args", "words"),
    [
        ("launch", {}, "unknown command 'launch'"),
        ("contactors", {"action": "toggle"}, "action"),
        ("contactors", {}, "action: Field required"),
        ("set_mode", {"mode": "working", "extra": 1}, "extra"),
        ("heartbeat", {"counter": -1}, "counter"),
    ],
)
def test_bad_arguments_get_a_readable_reason(
    command: str, args: dict[str, object], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        parse_args(command, args)


def setup() -> tuple[Clock, InMemoryBus, InMemoryBus, list[CommandArgs]]:
    clock = Clock()
    broker = InMemoryBroker()
    master = InMemoryBus(
        broker, system="demo", service="master_core", kind="master_core", clock=clock
    )
    ui = InMemoryBus(broker, system="demo", service="ui", kind="config_ui", clock=clock)
    master.start()
    ui.start()
    executed: list[CommandArgs] = []

    def contactors(args: CommandArgs) -> CommandOutcome:
        executed.append(args)
        assert isinstance(args, ContactorsArgs)
        if args.action == "close":
            return CommandOutcome(False, "a fault is latched")
        return CommandOutcome(True, result={"state": "opening"})

    CommandServer(
        master, {"contactors": contactors, "set_mode": lambda a: CommandOutcome(True)}, clock=clock
    )
    return clock, master, ui, executed


def roundtrip(
    master: InMemoryBus, ui_client: CommandClient, command: str, args: CommandArgs, ttl: float = 5
) -> list[CommandReply | None]:
    replies: list[CommandReply | None] = []
    ui_client.send(command, args, ttl_s=ttl, on_reply=replies.append)
    master.process()
    ui_client.bus.process()
    return replies


def test_accepted_and_refused_replies_come_back_to_the_requester() -> None:
    clock, master, ui, executed = setup()
    client = CommandClient(ui, clock=clock)
    [reply] = roundtrip(master, client, "contactors", ContactorsArgs(action="open"))
    assert reply.status == "accepted" and reply.result == {"state": "opening"}
    [reply] = roundtrip(master, client, "contactors", ContactorsArgs(action="close"))
    assert reply.status == "refused" and reply.reason == "a fault is latched"
    assert len(executed) == 2


def test_an_expired_command_is_not_executed() -> None:
    clock, master, ui, executed = setup()
    client = CommandClient(ui, clock=clock)
    replies: list[object] = []
    client.send("contactors", ContactorsArgs(action="open"), ttl_s=1.0, on_reply=replies.append)
    clock.now += 2.0  # delivered late, e.g. replayed after a reconnect
    master.process()
    ui.process()
    assert executed == []
    assert master.counters["commands_expired"] == 1
    [reply] = replies
    assert reply.status == "refused" and reply.reason.startswith("expired")


def test_client_gives_up_after_the_expiry() -> None:
    clock, _master, ui, _ = setup()
    client = CommandClient(ui, clock=clock)
    replies: list[object] = []
    client.send("set_mode", SetModeArgs(mode="standby"), ttl_s=1.0, on_reply=replies.append)
    clock.now += 1.5
    assert client.expire() == 1
    assert replies == [None]


def test_command_not_served_is_refused() -> None:
    clock, master, ui, _ = setup()
    client = CommandClient(ui, clock=clock)
    [reply] = roundtrip(master, client, "reset_faults", ResetFaultsArgs())
    assert reply.status == "refused" and "not served" in reply.reason


def test_raw_request_with_bad_args_gets_refused_with_reason() -> None:
    _clock, master, ui, executed = setup()
    replies: list[CommandReply] = []
    ui.subscribe(COMMAND_REPLY, lambda d: replies.append(d.message), user="config_ui", client="raw")
    req = CommandRequest(
        command="contactors",
        correlation_id="raw-1",
        reply_to=COMMAND_REPLY.topic("demo", user="config_ui", client="raw"),
        expires_at=1050.0,
        args={"action": 1},
    )
    ui.publish(COMMAND, req, command="contactors")
    master.process()
    ui.process()
    assert executed == []
    assert [r.status for r in replies] == ["refused"]
    assert "action" in replies[0].reason


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"action": [["close"]]}, "args.action"),  # a nested list: outside the envelope's shape
        ({"service_override": {"a": {"b": 1}}}, "args.service_override"),
    ],
)
def test_a_request_outside_the_envelope_is_refused_in_words_not_left_to_time_out(
    args: dict[str, object], field: str
) -> None:
    clock, master, ui, executed = setup()
    replies: list[CommandReply] = []
    ui.subscribe(COMMAND_REPLY, lambda d: replies.append(d.message), user="config_ui", client="raw")
    payload = {
        "schema_version": SCHEMA_VERSION, "source": "raw", "seq": 1, "ts": clock.now,
        "command": "contactors", "correlation_id": "nested-1",
        "reply_to": COMMAND_REPLY.topic("demo", user="config_ui", client="raw"),
        "expires_at": clock.now + 5,
        "args": args,
    }  # fmt: skip
    topic = COMMAND.topic("demo", command="contactors")
    ui.publish_raw(topic, msgpack.packb(payload), qos=1, retain=False)
    master.process()
    ui.process()
    assert executed == []
    [reply] = replies
    assert reply.status == "refused" and reply.correlation_id == "nested-1"
    assert reply.reason.startswith(f"invalid request: {field}"), reply.reason
    assert master.counters["payload_errors"] == 1 and master.counters["commands_refused"] == 1


def test_an_unreadable_or_expired_bad_request_gets_no_reply() -> None:
    clock, master, ui, _ = setup()
    replies: list[CommandReply] = []
    ui.subscribe(COMMAND_REPLY, lambda d: replies.append(d.message), user="config_ui", client="raw")
    topic = COMMAND.topic("demo", command="contactors")
    reply_to = COMMAND_REPLY.topic("demo", user="config_ui", client="raw")
    ui.publish_raw(topic, b"\xc1junk", qos=1, retain=False)
    stale = {
        "schema_version": SCHEMA_VERSION, "command": "contactors", "correlation_id": "old",
        "reply_to": reply_to, "expires_at": clock.now - 1, "args": {"action": [[1]]},
    }  # fmt: skip
    ui.publish_raw(topic, msgpack.packb(stale), qos=1, retain=False)
    master.process()
    ui.process()
    assert replies == [] and master.counters["payload_errors"] == 2


def test_request_pumped_waits_while_another_thread_processes_the_bus() -> None:
    import threading

    clock, master, ui, executed = setup()
    client = CommandClient(ui, clock=clock)
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            master.process()
            ui.process()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        reply = client.request_pumped("contactors", ContactorsArgs(action="open"), wait_s=5.0)
    finally:
        stop.set()
        thread.join(2)
    assert reply is not None and reply.status == "accepted" and len(executed) == 1
    stop.clear()
    assert client.request_pumped("set_mode", SetModeArgs(mode="standby"), wait_s=0.1) is None


def test_a_command_client_names_its_broker_login_in_its_reply_topic() -> None:
    """The ACL lets a user read only reply/<its login>/+: a client logged in as config_ui
    under another instance name (an operator's tool) must still get its replies."""
    endpoint = MqttEndpoint("127.0.0.1", 1883, False, "config_ui", "unused-here")
    bus = MqttBus(endpoint, system="demo", service="ops-tool", kind="test", presence=False)
    assert bus.broker_user == "config_ui"
    assert CommandClient(bus).reply_topic.startswith("bms/v1/demo/reply/config_ui/")
    anonymous = MqttBus(MqttEndpoint("127.0.0.1", 1883, False), system="demo", service="tool",
                        kind="x")  # fmt: skip
    assert CommandClient(anonymous).reply_topic.startswith("bms/v1/demo/reply/tool/")
