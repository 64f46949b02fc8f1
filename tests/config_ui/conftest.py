"""The UI app on an in-memory bus, with a stand-in master answering commands."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from services.config_ui.app import create_app
from services.config_ui.bridge import BusBridge
from services.config_ui.cell_history import CellHistoryStore
from services.config_ui.config_store import ConfigStore, SiteConfigStore
from services.config_ui.context import UiContext
from services.config_ui.history_store import HistoryStore
from services.config_ui.live import LiveView
from services.config_ui.settings import ConfigUiSettings
from services.config_ui.site_config import SiteAcks
from services.config_ui.site_live import SiteLive
from services.config_ui.users import UserStore
from services.master_core.events import EventLog
from services.master_core.stores import Store as EventStore
from shared.bus import InMemoryBroker, InMemoryBus
from shared.commands import CommandOutcome, CommandServer
from shared.messages import CommandArgs, EventsQueryArgs, SetModeArgs

SYSTEM = "ui-test"
ADMIN_PASSWORD = "admin-password-1"


@dataclass
class StandInMaster:
    """Answers the UI's commands as the master would, recording what it got; the event log
    is the master's own SQLite store."""

    bus: InMemoryBus
    received: list[tuple[str, CommandArgs]]
    events: EventStore
    refuse: dict[str, str] = field(default_factory=dict)
    """Commands to refuse, with the reason."""
    log: EventLog | None = None
    """The master's event log on that store (publishes with `seq`, answers `after_id`)."""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Commands to accept with this result."""

    def handle(self, name: str, args: CommandArgs) -> CommandOutcome:
        self.received.append((name, args))
        if name in self.refuse:
            return CommandOutcome(False, self.refuse[name])
        if name in self.results:
            return CommandOutcome(True, result=self.results[name])
        if name == "events_query":
            assert isinstance(args, EventsQueryArgs)
            if self.log is not None:
                return CommandOutcome(True, result=self.log.query(args))
            return CommandOutcome(True, result={"events": self.events.events(**args.model_dump())})
        if isinstance(args, SetModeArgs) and args.mode == "standby":
            return CommandOutcome(False, "refused for the test")
        return CommandOutcome(True)


@dataclass
class UiHarness:
    ctx: UiContext
    client: TestClient
    master: StandInMaster
    broker: InMemoryBroker

    def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        r = self.client.post("/api/session", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        token: str = r.json()["csrf_token"]
        self.client.headers["X-CSRF-Token"] = token
        return token


def make_harness(
    tmp_path: Path,
    *,
    command_timeout_s: float = 2.0,
    site: str | None = None,
    site_config: bool = False,
    broker: InMemoryBroker | None = None,
) -> Iterator[UiHarness]:
    """`site_config`: this application keeps the site configuration of `site`. `broker`: one
    with other services on it already (default: a new one)."""
    broker = broker if broker is not None else InMemoryBroker()
    settings = ConfigUiSettings(
        system=SYSTEM, data_dir=str(tmp_path), site=site, ui_site_config=site_config
    )
    site_live = None if site is None else SiteLive(site)
    db = tmp_path / "ui.sqlite"
    users = UserStore(db, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    users.ensure_admin(ADMIN_PASSWORD)
    users.set_password("admin", ADMIN_PASSWORD, by="admin")  # as after the first login
    store = ConfigStore(db)
    site_store = SiteConfigStore(db) if site_config else None
    live = LiveView(history_s=600)
    bus = InMemoryBus(broker, system=SYSTEM, service="config_ui", kind="config_ui")
    history = HistoryStore(db, retention_s=30 * 86400)
    cell_history = CellHistoryStore(db, retention_s=30 * 86400)
    bridge = BusBridge(bus, live, command_timeout_s=command_timeout_s, history=history,
                       cell_history=cell_history, site=site_live)  # fmt: skip
    ctx = UiContext(
        settings=settings, store=store, users=users, live=live, bridge=bridge, history=history,
        cell_history=cell_history, site=site_live, site_store=site_store,
    )  # fmt: skip
    if site_store is not None and site is not None:
        ctx.site_acks = SiteAcks(time.time)
        bridge.watch_site_config(site, ctx.site_acks)
    master_bus = InMemoryBus(broker, system=SYSTEM, service="master_core", kind="master_core")
    master = StandInMaster(master_bus, [], EventStore(tmp_path / "master.sqlite"))
    master.log = EventLog(master.events, master_bus, time.time)
    names = (
        "set_mode", "contactors", "reset_faults", "service_reset", "events_query", "ocv_capture"
    )  # fmt: skip
    CommandServer(master_bus, {n: (lambda a, n=n: master.handle(n, a)) for n in names})
    bus.start()
    master_bus.start()
    bridge.start()
    import threading

    stop = threading.Event()

    def serve_master() -> None:
        while not stop.is_set():
            master_bus.process(timeout_s=0.05)

    thread = threading.Thread(target=serve_master, daemon=True)
    thread.start()
    with TestClient(create_app(ctx)) as client:
        yield UiHarness(ctx, client, master, broker)
    stop.set()
    thread.join(1)
    bridge.stop()
    store.close()
    if site_store is not None:
        site_store.close()
    users.close()
    master.events.close()
    history.close()
    cell_history.close()


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[UiHarness]:
    yield from make_harness(tmp_path)
