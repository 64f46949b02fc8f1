"""Delivery of alerts with apprise, on a thread of its own: a slow mail server never holds up
the bridge's loop. The queue is bounded; an alert that finds it full is dropped and counted
(`alerts_dropped`), a failed delivery is counted (`alerts_failed`) and logged once a minute."""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter

import apprise

from services.integrations.alerts import Alert
from shared.log_limit import LimitedLog

log = logging.getLogger("integrations.alerts")
QUEUE_MAX = 200


class Notifier:
    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=QUEUE_MAX)
        self._log = LimitedLog(log, every_s=60.0)
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()

    def submit(self, alert: Alert) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.counters["alerts_dropped"] += 1
            self._log.log(
                logging.ERROR, "full", "alert queue full: dropped %s %s", alert.code, alert.kind
            )

    def _run(self) -> None:
        while (alert := self._queue.get()) is not None:
            sender = apprise.Apprise()
            sender.add(list(alert.urls))
            kind = apprise.NotifyType.SUCCESS if alert.kind == "clear" else (
                apprise.NotifyType.FAILURE if alert.level == "fault" else apprise.NotifyType.WARNING
            )  # fmt: skip
            try:
                ok = bool(sender.notify(body=alert.body, title=alert.title, notify_type=kind))
            except Exception:  # a plugin's bug must not end delivery
                ok = False
                log.exception("apprise failed")
            if ok:
                self.counters["alerts_sent"] += 1
            else:
                self.counters["alerts_failed"] += 1
                self._log.log(logging.ERROR, f"fail:{alert.rule}",
                              "alert %s of rule %s not delivered", alert.code,
                              alert.rule)  # fmt: skip

    def stop(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to `timeout_s`), then stop."""
        self._queue.put(None)
        self._thread.join(timeout_s)
