"""The fleet view's core: rows, online state, sequence gaps and duplicates."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.fleet_view.core import FleetView
from shared.codec import encode
from shared.messages import Event
from shared.messages.site import SiteSummary

T0 = 1_800_000_000.0
EPOCH = T0 - 100.0


def summary(seq: int, ts: float, **fields: object) -> bytes:
    values: dict[str, object] = {
        "seq_epoch": EPOCH,
        "site": "site-a",
        "online": True,
        "strings_total": 3,
        "strings_joined": 2,
        "soc": 61.5,
        "power_w": -4200.0,
    }
    values.update(fields)
    return encode(SiteSummary.model_validate(values), source="site_controller", seq=seq, ts=ts)


def event(seq: int, level: str = "info") -> bytes:
    message = Event(seq_epoch=EPOCH, level=level, kind="info", code="probe")  # type: ignore[arg-type]
    return encode(message, source="master_core", seq=seq, ts=T0)


SUMMARY_TOPIC = "fleet/site-a/site-a/site/summary"
EVENT_TOPIC = "fleet/site-a/site-a-s1/events/master_core"


def test_a_site_row_shows_its_latest_summary_and_link() -> None:
    view = FleetView(web_urls={"site-a": "https://a.example.net/"})
    view.on_message("fleet/site-a/bridge/state", b"1", T0)
    view.on_message(SUMMARY_TOPIC, summary(0, T0 - 1.0), T0)
    view.on_message(EVENT_TOPIC, event(7, "alarm"), T0)
    (row,) = view.sites(T0 + 2.0)
    assert row.site == "site-a"
    assert row.online is True
    assert (row.strings_total, row.strings_joined, row.soc, row.power_w) == (3, 2, 61.5, -4200.0)
    assert row.web_url == "https://a.example.net/"
    assert row.age_s == 3.0
    assert row.last_seen_s == T0
    assert (row.summaries, row.events, row.gaps, row.missing) == (1, 1, 0, 0)


def test_unknown_until_seen_then_offline_when_stale_or_bridge_down() -> None:
    view = FleetView(stale_after_s=30.0)
    view.on_message("fleet/site-b/bridge/state", b"1", T0)
    (row,) = view.sites(T0)
    assert row.online is False  # bridge up but no summary yet: nothing says the site runs
    assert row.soc is None and row.strings_total is None  # unknown, never 0
    view.on_message("fleet/site-b/site-b/site/summary", summary(0, T0, site="site-b"), T0)
    assert view.sites(T0 + 29.0)[0].online is True
    assert view.sites(T0 + 31.0)[0].online is False
    view.on_message("fleet/site-b/bridge/state", b"0", T0 + 1.0)
    assert view.sites(T0 + 2.0)[0].online is False
    assert view.sites(T0 + 2.0)[0].bridge_up is False


def test_a_site_controller_that_says_offline_is_offline() -> None:
    view = FleetView()
    view.on_message(SUMMARY_TOPIC, summary(0, T0, online=False), T0)
    assert view.sites(T0)[0].online is False


def test_a_redelivered_older_summary_does_not_replace_the_newer() -> None:
    view = FleetView()
    view.on_message(SUMMARY_TOPIC, summary(0, T0, soc=10.0), T0)
    view.on_message(SUMMARY_TOPIC, summary(1, T0 + 10.0, soc=20.0), T0)
    view.on_message(SUMMARY_TOPIC, summary(0, T0, soc=10.0), T0)  # QoS 1 redelivery
    (row,) = view.sites(T0 + 10.0)
    assert row.soc == 20.0
    assert (row.summaries, row.duplicates) == (2, 1)


def test_bad_payloads_are_refused_and_counted_not_raised() -> None:
    view = FleetView()
    view.on_message(SUMMARY_TOPIC, b"\xc1 not msgpack", T0)
    view.on_message("fleet/site-a/bridge/state", b"maybe", T0)
    view.on_message("fleet/site-a/something/else/entirely", b"", T0)
    view.on_message("elsewhere/x/y", b"", T0)
    assert view.counters["refused"] == 2
    assert view.counters["ignored"] == 2
    (row,) = view.sites(T0)
    assert row.last_seen_s is None  # nothing valid seen from it


@given(
    st.integers(1, 60),
    st.data(),
)
def test_every_sequence_counted_once_and_every_loss_is_a_gap(n: int, data: st.DataObject) -> None:
    """In-order delivery of seqs 0..n-1 with redeliveries and losses (never the first): each
    delivered seq is counted once, each redelivery is a duplicate, each lost seq is missing and
    each run of lost seqs followed by a delivered one is one gap."""
    lost = data.draw(st.sets(st.integers(1, n - 1))) if n > 1 else set()
    redelivered = data.draw(st.lists(st.sampled_from(range(n))))
    view = FleetView()
    delivered = [s for s in range(n) if s not in lost]
    stream = delivered + [s for s in redelivered if s not in lost]
    for seq in stream:
        view.on_message(EVENT_TOPIC, event(seq), T0)
    (row,) = view.sites(T0)
    assert row.events == len(delivered)
    assert row.duplicates == len(stream) - len(delivered)
    top = max(delivered)
    assert row.missing == len([s for s in lost if s < top])
    runs = sum(1 for s in lost if s < top and s - 1 not in lost)
    assert row.gaps == runs


def test_a_late_message_closes_its_gap() -> None:
    """A bridge's resend after a reconnect: seq 3 arrives after 4; the gap opens and closes."""
    view = FleetView()
    for seq in (0, 1, 2, 4, 3, 5):
        view.on_message(EVENT_TOPIC, event(seq), T0)
    (row,) = view.sites(T0)
    assert (row.events, row.gaps, row.late, row.missing, row.duplicates) == (6, 1, 1, 0, 0)
