"""Gap detection on event streams (pure logic)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.event_sequence import EventSequencer, Gap

M = "master_core"


def test_the_first_event_is_the_baseline_and_a_jump_is_a_gap() -> None:
    s = EventSequencer()
    assert s.observe(M, 1.0, 7).new and s.observe(M, 1.0, 7).gap is None
    seen = s.observe(M, 1.0, 10)
    assert seen.new and seen.gap == Gap(M, 1.0, 8, 9)
    assert s.missing(M) == [Gap(M, 1.0, 8, 9)]


def test_a_duplicate_is_dropped_and_a_fetched_event_fills_its_gap() -> None:
    s = EventSequencer()
    for seq in (1, 2, 5):
        s.observe(M, 1.0, seq)
    assert not s.observe(M, 1.0, 2).new  # QoS 1 redelivery
    assert s.observe(M, 1.0, 4).new  # fetched
    assert not s.observe(M, 1.0, 4).new
    assert s.missing(M) == [Gap(M, 1.0, 3, 3)]


def test_sources_are_tracked_apart() -> None:
    s = EventSequencer()
    s.observe(M, 1.0, 1)
    s.observe("can_gateway", 2.0, 0)
    assert s.observe("can_gateway", 2.0, 1).gap is None
    assert s.observe(M, 1.0, 3).gap == Gap(M, 1.0, 2, 2)


def test_a_new_epoch_restarts_the_count_at_the_sources_first_seq() -> None:
    s = EventSequencer(first_seq={M: 1})
    s.observe(M, 1.0, 5)
    s.observe(M, 1.0, 8)  # 6, 7 missing in the old epoch
    seen = s.observe(M, 2.0, 3)
    assert seen.new_epoch and seen.gap == Gap(M, 2.0, 1, 2) and seen.lost == 2
    seen = s.observe("can_gateway", 1.0, 4)
    seen = s.observe("can_gateway", 9.0, 0)
    assert seen.new_epoch and seen.gap is None and seen.lost == 0


def test_fetching_pages_through_a_gap_and_gives_up_rows_the_log_lacks() -> None:
    s = EventSequencer()
    s.observe(M, 1.0, 0)
    s.observe(M, 1.0, 11)
    page = s.next_fetch(M, 4)
    assert page == Gap(M, 1.0, 1, 4)
    assert s.next_fetch(M, 4) is None  # one fetch at a time
    for seq in (1, 2, 4):
        s.observe(M, 1.0, seq)
    # a full page (cut by its limit): only up to the last row returned is known complete
    assert s.fetch_done(page, covered_to=4) == 1  # seq 3 is not in the log
    page = s.next_fetch(M, 100)
    assert page == Gap(M, 1.0, 5, 10)
    s.fetch_failed(page)
    assert s.next_fetch(M, 100) == page  # tried again
    for seq in range(5, 11):
        s.observe(M, 1.0, seq)
    assert s.fetch_done(page, covered_to=10) == 0
    assert s.missing(M) == [] and s.next_fetch(M, 100) is None


def test_open_gaps_are_bounded() -> None:
    s = EventSequencer(max_missing=100)
    s.observe(M, 1.0, 0)
    seen = s.observe(M, 1.0, 1000)
    assert seen.lost == 899 and s.missing(M) == [Gap(M, 1.0, 900, 999)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 60), min_size=1, max_size=80),
    st.randoms(use_true_random=False),
)
def test_every_event_is_handed_on_once_whatever_the_order_and_repeats(
    seqs: list[int], rnd: object
) -> None:
    """Live deliveries with losses and repeats, then the missing ones fetched in any order:
    each seq from the first seen to the highest is handed on exactly once."""
    s = EventSequencer()
    handed: list[int] = []
    for seq in seqs:
        if s.observe(M, 1.0, seq).new:
            handed.append(seq)
    first = seqs[0]
    assert all(q >= first for q in handed)  # before the baseline is history, not a gap
    assert set(handed) == {q for q in seqs if q >= first}
    missing = [q for g in s.missing(M) for q in range(g.first, g.last + 1)]
    assert set(missing).isdisjoint(handed)
    assert set(missing) | set(handed) == set(range(first, max(handed) + 1))
    assert isinstance(rnd, random.Random)
    rnd.shuffle(missing)
    for seq in missing + missing:
        if s.observe(M, 1.0, seq).new:
            handed.append(seq)
    assert sorted(handed) == list(range(first, max(handed) + 1))
    assert len(handed) == len(set(handed))


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.integers(0, 60), min_size=1, max_size=40),
    after=st.lists(st.integers(0, 80), max_size=40),
)
def test_a_resumed_sequencer_hands_on_what_the_first_did_not_and_nothing_twice(
    before: list[int], after: list[int]
) -> None:
    """A consumer restarted from `position` and `missing`: across both runs each seq from the
    first one seen is handed on at most once, and every seq the first run missed is still
    missing (to be fetched) or handed on by the second."""
    first = EventSequencer()
    handed = [q for q in before if first.observe(M, 1.0, q).new]
    pos = first.position(M)
    assert pos is not None
    gaps = [(g.first, g.last) for g in first.missing(M)]
    second = EventSequencer()
    second.resume(M, pos[0], pos[1], gaps)
    assert second.missing(M) == first.missing(M) and second.position(M) == pos
    handed += [q for q in after if second.observe(M, 1.0, q).new]
    assert len(handed) == len(set(handed))
    still = {q for g in second.missing(M) for q in range(g.first, g.last + 1)}
    top = max(handed)
    assert set(handed) | still == set(range(before[0], top + 1))
