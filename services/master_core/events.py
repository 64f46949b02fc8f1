"""The master's event log: `shared.event_log.EventLog` (shared with the site controller), under
the name older code imports it by."""

from shared.event_log import EPOCH_KEY, EventLog

__all__ = ["EPOCH_KEY", "EventLog"]
