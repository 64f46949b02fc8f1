"""At most once per correlation id: duplicates get the first reply, reused ids are refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.bus import InMemoryBroker, InMemoryBus
from shared.command_ledger import MAX_LIFETIME_S, REMEMBER_S, CommandLedger
from shared.commands import CommandOutcome, CommandServer, refusal_reason
from shared.messages import CommandArgs, CommandReply, CommandRequest
from shared.topics import COMMAND, COMMAND_REPLY

REPLY_TO = COMMAND_REPLY.topic("demo", user="config_ui", client="ui-1")


def request(cid: str, action: str = "close", expires_at: float = 1_030.0) -> CommandRequest:
    return CommandRequest(
        command="contactors",
        correlation_id=cid,
        reply_to=REPLY_TO,
        expires_at=expires_at,
        args={"action": action},
    )


def reply(cid: str, status: str = "accepted") -> CommandReply:
    return CommandReply.model_validate(
        {"command": "contactors", "correlation_id": cid, "status": status}
    )


def test_the_same_request_is_a_duplicate_with_the_first_reply() -> None:
    ledger = CommandLedger()
    req = request("a")
    assert ledger.check(req, 1_000.0).kind == "new"
    ledger.record(req, reply("a"), 1_000.0)
    verdict = ledger.check(req.model_copy(update={"seq": 7, "ts": 1_001.0}), 1_001.0)
    assert verdict.kind == "duplicate" and verdict.reply == reply("a")


def test_another_request_under_a_known_id_is_reused() -> None:
    ledger = CommandLedger()
    ledger.record(request("a"), reply("a"), 1_000.0)
    assert ledger.check(request("a", action="open"), 1_001.0).kind == "reused"
    assert ledger.check(request("a", expires_at=1_031.0), 1_001.0).kind == "reused"


def test_an_id_is_forgotten_after_remember_s_and_only_then() -> None:
    ledger = CommandLedger()
    ledger.record(request("a"), reply("a"), 1_000.0)
    assert ledger.check(request("a"), 1_000.0 + REMEMBER_S - 0.001).kind == "duplicate"
    assert ledger.check(request("a"), 1_000.0 + REMEMBER_S).kind == "new"
    assert len(ledger) == 0


def test_capacity_forgets_the_oldest_and_counts_it() -> None:
    ledger = CommandLedger(capacity=3)
    for i in range(5):
        ledger.record(request(f"c{i}"), reply(f"c{i}"), 1_000.0 + i)
    assert len(ledger) == 3 and ledger.evicted == 2
    assert ledger.check(request("c0"), 1_005.0).kind == "new"
    assert ledger.check(request("c4"), 1_005.0).kind == "duplicate"


def test_memory_shorter_than_a_command_may_live_is_refused() -> None:
    with pytest.raises(ValueError, match="lifetime"):
        CommandLedger(remember_s=MAX_LIFETIME_S - 1)


def test_a_request_expiring_beyond_the_lifetime_is_refused() -> None:
    far = request("a", expires_at=1_000.0 + MAX_LIFETIME_S + 1)
    reason = refusal_reason(far, topic_command="contactors", system="demo", now=1_000.0)
    assert reason is not None and "may live" in reason
    near = request("a", expires_at=1_000.0 + MAX_LIFETIME_S)
    assert refusal_reason(near, topic_command="contactors", system="demo", now=1_000.0) is None


def content(r: CommandReply) -> tuple[object, ...]:
    """A reply without its envelope (seq and ts are stamped per publish)."""
    return (r.command, r.correlation_id, r.status, r.reason, r.result)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


# A delivery: (id index, action, expiry offset, seconds since the previous delivery).
deliveries = st.lists(
    st.tuples(
        st.integers(0, 4),
        st.sampled_from(["open", "close"]),
        st.sampled_from([5.0, 30.0]),
        st.floats(0.0, 200.0),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(deliveries)
def test_every_delivery_gets_one_reply_and_no_request_runs_twice(
    plan: list[tuple[int, str, float, float]],
) -> None:
    """Model: a request runs iff it is fresh and its id is unknown (or forgotten); a duplicate
    of the exact request gets the reply the first one got; any other reuse is refused."""
    clock = Clock()
    broker = InMemoryBroker()
    master = InMemoryBus(broker, system="demo", service="master_core", kind="master", clock=clock)
    sender = InMemoryBus(broker, system="demo", service="ui", kind="ui", clock=clock)
    master.start()
    sender.start()
    executed: list[tuple[str, CommandArgs]] = []
    count = iter(range(10_000))

    def handler(args: CommandArgs) -> CommandOutcome:
        n = next(count)
        executed.append((current[0], args))
        return CommandOutcome(True, result={"n": n})

    CommandServer(master, {"contactors": handler}, clock=clock)
    replies: list[CommandReply] = []
    sender.subscribe(
        COMMAND_REPLY, lambda d: replies.append(d.message), user="config_ui", client="ui-1"
    )
    first_seen: dict[str, tuple[float, CommandRequest, CommandReply]] = {}
    current = [""]
    for sent, (index, action, ttl_s, gap_s) in enumerate(plan):
        clock.now += gap_s
        cid = f"id{index}"
        known = first_seen.get(cid)
        if known is not None and clock.now - known[0] >= REMEMBER_S:
            del first_seen[cid]
            known = None
        # Resend the exact first request while it is known, half of the time.
        if known is not None and action == "close":
            req = known[1]
        else:
            req = request(cid, action=action, expires_at=clock.now + ttl_s)
        current[0] = cid
        before = len(executed)
        sender.publish(COMMAND, req, command="contactors")
        master.process()
        sender.process()
        got = replies[-1]
        assert got.correlation_id == cid
        assert len(replies) == sent + 1  # one reply per delivery
        if known is None:
            if clock.now <= req.expires_at:
                assert len(executed) == before + 1 and got.status == "accepted"
                first_seen[cid] = (clock.now, req, got)
            else:
                assert len(executed) == before and got.status == "refused"
        elif req == known[1] and clock.now <= req.expires_at:
            assert len(executed) == before and content(got) == content(known[2])
        else:
            assert len(executed) == before and got.status == "refused"
