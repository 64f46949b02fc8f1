"""`python -m services.config_ui [--help]`: the user access application of one system."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Generator
from pathlib import Path

import uvicorn
from pydantic_settings import CliApp
from uvicorn.config import STARTUP_FAILURE

from services.config_ui.app import create_app
from services.config_ui.bridge import BusBridge
from services.config_ui.cell_history import CellHistoryStore
from services.config_ui.config_store import ConfigStore, SiteConfigStore
from services.config_ui.context import InvalidConfigError, UiContext
from services.config_ui.history_store import HistoryStore
from services.config_ui.live import LiveView
from services.config_ui.settings import ConfigUiSettings
from services.config_ui.site_config import SiteAcks
from services.config_ui.site_live import SiteLive
from services.config_ui.users import UserError, UserStore
from shared.bus import MqttBus
from shared.config import demo_config, plant_demo_config
from shared.metrics import serve_metrics
from shared.settings import configure_logging

KIND = "config_ui"
ADOPT_WAIT_S = 3.0
"""How long to wait for a retained configuration on the broker before seeding one."""
log = logging.getLogger("config_ui")


def first_admin(users: UserStore, settings: ConfigUiSettings) -> None:
    initial = None
    if settings.ui_admin_password_file:
        initial = Path(settings.ui_admin_password_file).read_text().strip() or None
    password = users.ensure_admin(initial)
    if password and not initial:
        # shown once: only its hash is stored
        print(
            f"\n*** first start: user 'admin', password '{password}' "
            "(shown once; you will be asked to change it) ***\n",
            flush=True,
        )


def settle_config(ctx: UiContext, bus: MqttBus, stop: threading.Event) -> None:
    """Publish the stored configuration; with none, adopt the broker's or seed the demo."""
    while not bus.wait_connected(1.0):
        if stop.is_set():
            return
    if ctx.publish_latest() is not None:
        return
    ctx.bridge.config_seen.wait(ADOPT_WAIT_S)
    if ctx.latest() is not None:
        return  # a user applied one meanwhile: it is the newest, and its echo is no adoption
    seen = ctx.live.broker_config
    if seen is not None and seen.system_id == ctx.system:
        ctx.apply(seen, user="system", source="adopted", comment="running on the broker")
    elif ctx.settings.ui_seed_config == "demo":
        ctx.apply(demo_config(ctx.system), user="system", source="seed", comment="demo system")
    elif ctx.settings.ui_seed_config == "plant":
        config = plant_demo_config(ctx.system, ctx.settings.ui_seed_index)
        ctx.apply(config, user="system", source="seed", comment="demo system on the plant")
    else:
        log.warning("no configuration yet: open the wizard to configure system %r", ctx.system)


def settle_site_config(ctx: UiContext, bus: MqttBus, stop: threading.Event) -> None:
    """The web application that keeps the site configuration: publish the stored one; with
    none, adopt the broker's (a site configured before) or seed one from
    BMS_UI_SEED_SITE_STRINGS."""
    if ctx.site_store is None or ctx.site is None:
        return
    while not bus.wait_connected(1.0):
        if stop.is_set():
            return
    latest = ctx.latest_site()
    if latest is not None:
        ctx.bridge.publish_site_config(latest.config)
        return
    deadline = time.monotonic() + ADOPT_WAIT_S
    while ctx.site.config is None and time.monotonic() < deadline and not stop.is_set():
        time.sleep(0.1)
    if ctx.latest_site() is not None:
        return  # a user applied one meanwhile: it is the newest, and its echo is no adoption
    seen = ctx.site.config
    strings = [s.strip() for s in ctx.settings.ui_seed_site_strings.split(",") if s.strip()]
    if seen is not None and seen.site == ctx.site.site:
        ctx.apply_site(seen, user="system", source="adopted", comment="running on the broker")
    elif strings:
        data = {"site": ctx.site.site, "strings": [{"system": s} for s in strings]}
        try:
            config = ctx.validate_site(data)
        except InvalidConfigError as exc:
            log.error("BMS_UI_SEED_SITE_STRINGS is not a valid site: %s", exc)
            return
        ctx.apply_site(config, user="system", source="seed", comment="demo site")
    else:
        log.warning("no site configuration yet: open the Site configuration page of site %r",
                    ctx.site.site)  # fmt: skip


def note_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT only set `stop`. uvicorn takes both over while it serves and, once
    it has shut down, raises them again against the handlers it found: with the default ones
    that re-raise killed the process (exit -15) before the bus said offline and disconnected,
    leaving the broker to fire the last will. With these, `run` cleans up and returns 0."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


class StoppableServer(uvicorn.Server):
    """uvicorn, told of a stop signal that came before it took the signals over: one between
    the check before `run` and uvicorn's handlers was lost, and the service ran on."""

    def __init__(self, config: uvicorn.Config, stop: threading.Event) -> None:
        super().__init__(config)
        self.stop = stop

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            if self.stop.is_set():
                self.should_exit = True  # starts, then shuts down at once
            yield


def run(settings: ConfigUiSettings) -> int:
    configure_logging(settings.log_level)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    db = data_dir / f"config_ui-{settings.system}.sqlite"
    if settings.ui_site_config and settings.site is None:
        log.error("BMS_UI_SITE_CONFIG needs BMS_SITE: the site whose configuration is kept here")
        return 2
    store, users = ConfigStore(db), UserStore(db)
    site_store = SiteConfigStore(db) if settings.ui_site_config else None
    try:
        first_admin(users, settings)
    except (OSError, UserError) as exc:
        log.error("cannot create the first admin from %s: %s", settings.ui_admin_password_file, exc)
        return 2
    live = LiveView(history_s=settings.ui_history_s)
    bus = MqttBus.from_settings(settings, kind=KIND)
    history = HistoryStore(db, retention_s=settings.ui_history_retention_days * 86400)
    cell_history = CellHistoryStore(db, retention_s=settings.ui_cell_history_days * 86400)
    site = None if settings.site is None else SiteLive(settings.site)
    bridge = BusBridge(
        bus, live, command_timeout_s=settings.ui_command_timeout_s, history=history,
        cell_history=cell_history, site=site,
    )  # fmt: skip
    ctx = UiContext(
        settings=settings, store=store, users=users, live=live, bridge=bridge, history=history,
        cell_history=cell_history, site=site, site_store=site_store,
    )  # fmt: skip
    if site_store is not None and settings.site is not None:
        ctx.site_acks = SiteAcks(time.time)
        bridge.watch_site_config(settings.site, ctx.site_acks)
    stop = threading.Event()
    note_stop_signals(stop)
    metrics = serve_metrics(bus, settings)
    bus.start()
    bridge.start()
    threading.Thread(target=settle_config, args=(ctx, bus, stop), daemon=True).start()
    threading.Thread(target=settle_site_config, args=(ctx, bus, stop), daemon=True).start()
    print(
        f"UI at http://{settings.ui_host}:{settings.ui_port}/ (system {settings.system})",
        flush=True,
    )
    try:
        if stop.is_set():  # stopped while starting: uvicorn would not know
            return 0
        config = uvicorn.Config(
            create_app(ctx),
            host=settings.ui_host,
            port=settings.ui_port,
            log_level=settings.log_level.lower(),
            access_log=settings.log_level == "DEBUG",
        )
        server = StoppableServer(config, stop)
        server.run()
        if not server.started:  # e.g. its port taken: exit as `uvicorn.run` would
            sys.exit(STARTUP_FAILURE)
    finally:
        stop.set()
        bridge.stop()
        metrics.stop()
        bus.stop()
        store.close()
        if site_store is not None:
            site_store.close()
        users.close()
        history.close()
        cell_history.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return run(CliApp.run(ConfigUiSettings, cli_args=args))


if __name__ == "__main__":
    sys.exit(main())
