"""The master's SQLite store: `shared.event_store.Store` (the event log is shared with the site
controller), under the name older code imports it by."""

from shared.event_store import LEVELS, Store

__all__ = ["LEVELS", "Store"]
