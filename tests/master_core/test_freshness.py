"""SampleGate: replays and old samples never count as a live module."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.master_core.freshness import RETIRED_BOOTS, SampleGate

NOW = 1_000_000.0


def test_new_samples_pass_and_gaps_are_counted() -> None:
    gate = SampleGate(modules=2, max_age_s=5.0)
    assert gate.admit(0, "aa00aa00", 0, NOW, NOW).refused is None
    assert gate.admit(0, "aa00aa00", 1, NOW, NOW).gap == 0
    assert gate.admit(0, "aa00aa00", 5, NOW, NOW).gap == 3
    assert gate.admit(1, "aa00aa00", 0, NOW, NOW).refused is None  # modules apart


def test_a_replay_of_the_current_boot_is_refused_and_is_no_gap() -> None:
    gate = SampleGate(modules=1, max_age_s=5.0)
    for seq in range(10):
        gate.admit(0, "aa00aa00", seq, NOW, NOW)
    for seq in (9, 3, 0):
        assert gate.admit(0, "aa00aa00", seq, NOW, NOW).refused == "replayed"
    assert gate.admit(0, "aa00aa00", 10, NOW, NOW).gap == 0


def test_a_restart_is_admitted_and_the_old_boot_is_retired() -> None:
    gate = SampleGate(modules=1, max_age_s=5.0)
    gate.admit(0, "aa00aa00", 500, NOW, NOW)
    first = gate.admit(0, "bb00bb00", 0, NOW, NOW)
    assert first.refused is None and first.restarted and first.gap == 0
    assert gate.admit(0, "aa00aa00", 501, NOW, NOW).refused == "replayed"


def test_samples_beyond_the_age_either_way_are_refused() -> None:
    gate = SampleGate(modules=1, max_age_s=2.0)
    assert gate.admit(0, "aa00aa00", 0, NOW - 2.001, NOW).refused == "too_old"
    assert gate.admit(0, "aa00aa00", 0, NOW + 2.001, NOW).refused == "from_the_future"
    assert gate.admit(0, "aa00aa00", 0, NOW - 2.0, NOW).refused is None


def test_without_a_boot_id_only_the_age_is_checked() -> None:
    gate = SampleGate(modules=1, max_age_s=5.0)
    gate.admit(0, None, 7, NOW, NOW)
    assert gate.admit(0, None, 0, NOW, NOW).refused is None  # an older agent restarted


def test_a_non_positive_age_is_refused() -> None:
    with pytest.raises(ValueError):
        SampleGate(modules=1, max_age_s=0.0)


# A history: the agent restarts now and then; an attacker replays any earlier sample.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("sample"), st.integers(1, 3), st.floats(0.0, 0.5)),
        st.tuples(st.just("restart"), st.just(0), st.floats(0.0, 3.0)),
        st.tuples(st.just("replay"), st.integers(0, 10_000), st.floats(0.0, 0.5)),
    ),
    max_size=60,
)


@settings(max_examples=400)
@given(steps)
def test_only_new_and_recent_samples_are_admitted(plan: list[tuple[str, int, float]]) -> None:
    max_age_s = 2.0
    gate = SampleGate(modules=1, max_age_s=max_age_s)
    now = NOW
    boot, seq = 0, -1
    sent: list[tuple[str, int, float]] = []  # (boot id, seq, sample_ts)
    first_of_boot = True
    for kind, n, dt in plan:
        now += dt
        if kind == "restart":
            boot, seq, first_of_boot = boot + 1, -1, True
            continue
        if kind == "sample":
            seq += n  # n - 1 samples lost on the way
            sample = (f"{boot:08x}", seq, now)
            admission = gate.admit(0, *sample, now)
            assert admission.refused is None
            assert admission.gap == (0 if first_of_boot else n - 1)
            first_of_boot = False
            sent.append(sample)
        elif sent:
            old = sent[n % len(sent)]
            admission = gate.admit(0, *old, now)
            assert admission.refused in ("replayed", "too_old")
            if now - old[2] > max_age_s:
                assert admission.refused == "too_old"


def test_retired_boots_are_bounded_and_the_oldest_is_forgotten() -> None:
    gate = SampleGate(modules=1, max_age_s=5.0)
    boots = [f"{b:08x}" for b in range(RETIRED_BOOTS + 2)]
    for boot in boots:
        gate.admit(0, boot, 0, NOW, NOW)
    assert all(gate.admit(0, b, 1, NOW, NOW).refused == "replayed" for b in boots[2:-1])
    # the oldest boot fell out of the memory: its sample reads as yet another restart, and
    # only the age check stands between it and the pack (within max_age_s of its capture)
    assert gate.admit(0, boots[0], 1, NOW, NOW).restarted
