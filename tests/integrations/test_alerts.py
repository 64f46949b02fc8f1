"""Alert rules (pure): what is notified, once, with a clear for every notified raise, and the
message in words."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.integrations.alerts import AlertPolicy, AlertRule, describe
from shared.messages import CellLocation, Event
from tests.factories import pack_state


def event(code: str = "cell_overvoltage", level: str = "alarm", kind: str = "raise") -> Event:
    return Event(level=level, kind=kind, code=code, text=f"{code} {level} {kind}",
                 values={"value": 4.251, "threshold": 4.2}, ts=1_800_000_000.0)  # type: ignore[arg-type]  # fmt: skip


def rule(**kw: object) -> AlertRule:
    return AlertRule.model_validate({"urls": ["json://x"], **kw})


def test_level_codes_quiet_period_and_clear() -> None:
    policy = AlertPolicy((rule(quiet_period_s=60.0),))
    assert policy.consider("s", event(level="warning"), None, 0.0) == []  # below alarm
    assert policy.consider("s", event(kind="mode"), None, 0.0) == []
    (raised,) = policy.consider("s", event(), None, 0.0)
    assert raised.kind == "raise"
    assert policy.consider("s", event(), None, 30.0) == []  # quiet period
    assert policy.suppressed == 1
    (cleared,) = policy.consider("s", event(kind="clear"), None, 31.0)
    assert cleared.kind == "clear"
    assert policy.consider("s", event(kind="clear"), None, 32.0) == []  # cleared once
    assert policy.consider("s", event(), None, 40.0) == []  # still quiet: no raise, no clear
    assert policy.consider("s", event(kind="clear"), None, 41.0) == []
    assert len(policy.consider("s", event(), None, 61.0)) == 1
    assert len(policy.consider("other", event(), None, 61.0)) == 1  # systems apart


def test_codes_filter_and_no_clear_when_asked() -> None:
    policy = AlertPolicy((rule(codes=["insulation_fault"], min_level="warning",
                               notify_clear=False),))  # fmt: skip
    assert policy.consider("s", event(), None, 0.0) == []
    assert len(policy.consider("s", event("insulation_fault", "fault"), None, 0.0)) == 1
    assert policy.consider("s", event("insulation_fault", "fault", "clear"), None, 1.0) == []


def test_the_message_says_system_location_value_and_threshold() -> None:
    state = pack_state(cell_v_max_at=CellLocation(module=1, index=3))
    title, body = describe("site-7", event(), state, 0.0)
    assert title == "[BMS site-7] ALARM raised: Highest cell voltage too high"
    assert "System site-7" in body and "module 2, cell 4" in body
    assert "Value: 4.251, threshold: 4.2." in body and "2027-01-15" in body
    _t, unknown = describe("s", event(), None, 0.0)
    assert "cell unknown" in unknown
    _t, pack = describe("s", event("insulation_fault", "fault"), state, 0.0)
    assert "Where: the pack." in pack


STEPS = st.lists(
    st.tuples(st.sampled_from(["raise", "clear"]), st.sampled_from(["alarm", "fault"]),
              st.floats(0.0, 100.0)),
    max_size=60,
)  # fmt: skip


@given(steps=STEPS, quiet=st.floats(0.0, 200.0))
def test_every_clear_follows_its_own_notified_raise_and_raises_respect_quiet(
    steps: list[tuple[str, str, float]], quiet: float
) -> None:
    policy = AlertPolicy((rule(quiet_period_s=quiet, min_level="alarm"),))
    now = 0.0
    open_: set[str] = set()
    last: dict[str, float] = {}
    for kind, level, dt in steps:
        now += dt
        for alert in policy.consider("s", event(level=level, kind=kind), None, now):
            if alert.kind == "raise":  # again while open only as a reminder after the quiet period
                assert alert.level not in last or now - last[alert.level] >= quiet
                open_.add(alert.level)
                last[alert.level] = now
            else:
                assert alert.level in open_
                open_.remove(alert.level)
