"""LinkHealth: when a CAN channel is given up and reopened, and how often (pure)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.can_link import LinkHealth


def test_an_isolated_error_between_good_frames_keeps_the_link() -> None:
    link = LinkHealth(errors_to_reopen=2)
    for t in range(10):
        assert link.error(float(t)) is None
        link.frame()
    assert link.up and link.receive_errors == 10 and not link.reopen_due(100.0)


def test_errors_in_a_row_take_the_link_down_and_a_reopen_brings_it_up() -> None:
    link = LinkHealth(errors_to_reopen=2)
    assert link.error(1.0) is None
    assert link.error(1.1) == "down"
    assert not link.up and link.reopen_due(1.1)
    assert link.error(1.2) is None and link.receive_errors == 2  # the old channel's last gasps
    assert link.reopened(1.2, ok=True) == "up"
    assert link.up and not link.reopen_due(10.0) and link.reopens == 1


def test_failed_reopens_back_off_doubling_up_to_the_maximum() -> None:
    link = LinkHealth(errors_to_reopen=1, backoff_min_s=0.5, backoff_max_s=4.0)
    link.error(0.0)
    waits = []
    now = 0.0
    for _ in range(6):
        assert link.reopen_due(now)
        link.reopened(now, ok=False)
        assert link.next_reopen_s is not None
        waits.append(link.next_reopen_s - now)
        assert not link.reopen_due(link.next_reopen_s - 0.01)
        now = link.next_reopen_s
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert link.reopen_failures == 6


def test_junk_after_every_reopen_backs_off_until_a_good_frame() -> None:
    link = LinkHealth(errors_to_reopen=1, backoff_min_s=0.5, backoff_max_s=8.0)
    now, reopen_times = 0.0, []
    for _ in range(5):
        assert link.error(now) == "down"
        assert link.next_reopen_s is not None
        now = link.next_reopen_s
        link.reopened(now, ok=True)
        reopen_times.append(now)
    gaps = [b - a for a, b in itertools.pairwise(reopen_times)]
    assert gaps == [0.5, 1.0, 2.0, 4.0]
    link.frame()  # the device works again: the next trouble reopens at once
    assert link.error(now + 100) == "down" and link.next_reopen_s == now + 100


@pytest.mark.parametrize("kw", [{"errors_to_reopen": 0}, {"backoff_min_s": 0.0},
                                {"backoff_min_s": 5.0, "backoff_max_s": 1.0}])  # fmt: skip
def test_bad_parameters_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LinkHealth(**kw)  # type: ignore[arg-type]


events = st.lists(
    st.tuples(st.sampled_from(["frame", "error", "reopen_ok", "reopen_fail"]),
              st.floats(0.0, 5.0)),
    max_size=80,
)  # fmt: skip


@settings(max_examples=400)
@given(events, st.integers(1, 4))
def test_properties_over_random_histories(
    history: list[tuple[str, float]], errors_to_reopen: int
) -> None:
    """Down only after errors_to_reopen errors with no frame between; never two reopens closer
    than backoff_min_s without a good frame between; up after every successful reopen."""
    link = LinkHealth(errors_to_reopen=errors_to_reopen, backoff_min_s=0.5, backoff_max_s=8.0)
    now, run, last_reopen = 0.0, 0, None
    for what, dt in history:
        now += dt
        if what == "frame":
            link.frame()
            run, last_reopen = 0, None
        elif what == "error":
            was_up = link.up
            event = link.error(now)
            if was_up:
                run += 1
                assert (event == "down") == (run >= errors_to_reopen)
                if event == "down":
                    assert link.next_reopen_s is not None and link.next_reopen_s >= now
            else:
                assert event is None
        elif link.reopen_due(now):
            if last_reopen is not None:
                assert now - last_reopen >= 0.5 - 1e-9
            ok = what == "reopen_ok"
            assert (link.reopened(now, ok=ok) == "up") == ok
            last_reopen = now
            if ok:
                run = 0
                assert link.up
