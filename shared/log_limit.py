"""A log line per key at most once per interval: a misbehaving peer must not flood the log
(the counters carry the exact figures)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class LimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        self.logger = logger
        self.every_s = every_s
        self.clock = clock
        self.max_keys = max_keys
        self._last: dict[str, float] = {}

    def log(self, level: int, key: str, fmt: str, *args: object) -> bool:
        """Log unless `key` was logged less than `every_s` ago; True when it was logged."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            return False
        if last is None and len(self._last) >= self.max_keys:
            self._last.clear()  # keys chosen by a peer must not grow without bound
        self._last[key] = now
        self.logger.log(level, fmt, *args)
        return True

    def warning(self, key: str, fmt: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, fmt, *args)

    def info(self, key: str, fmt: str, *args: object) -> bool:
        return self.log(logging.INFO, key, fmt, *args)
