"""A peer that misbehaves in a loop gets one log line per key and interval."""

from __future__ import annotations

import logging

import pytest

from shared.log_limit import LimitedLog


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_key_and_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limited = LimitedLog(logging.getLogger("t.limit"), every_s=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="t.limit"):
        logged = [limited.warning("a", "bad %d", i) for i in range(100)]
        assert limited.info("b", "other")
        clock.now = 9.99
        assert not limited.warning("a", "still quiet")
        clock.now = 10.0
        assert limited.warning("a", "again")
    assert logged.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == ["bad 0", "other", "again"]


def test_keys_from_a_peer_do_not_grow_without_bound() -> None:
    limited = LimitedLog(logging.getLogger("t.limit"), max_keys=8, clock=Clock())
    for i in range(1000):
        limited.info(f"k{i}", "x")
    assert len(limited._last) <= 8
