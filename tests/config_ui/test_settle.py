"""Start-up settling of the stored configurations (`config_ui.__main__`): a configuration a user
applies while the web application waits to adopt the broker's is the newest; its own echo on
the broker is no second, "adopted" version (found by the site configuration browser test: two
versions, the second "adopted ... running on the broker")."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from services.config_ui.__main__ import settle_config, settle_site_config


class _Bus:
    def wait_connected(self, timeout: float) -> bool:
        return True


class _Applied:
    """What the user's apply leaves: a stored version, and its echo on the broker."""

    def __init__(self) -> None:
        self.version: Any = None
        self.adopted: list[Any] = []


def test_a_site_configuration_applied_while_waiting_is_not_adopted_again() -> None:
    state = _Applied()
    echo = SimpleNamespace(site="site-a")

    class _Site:
        site = "site-a"

        @property
        def config(self) -> Any:
            # the user applies while settle waits: stored, then echoed by the broker
            state.version = SimpleNamespace(config=echo)
            return echo

    ctx = SimpleNamespace(
        site_store=object(),
        site=_Site(),
        latest_site=lambda: state.version,
        apply_site=lambda config, **kw: state.adopted.append((config, kw)),
        settings=SimpleNamespace(ui_seed_site_strings=""),
        bridge=SimpleNamespace(publish_site_config=lambda config: None),
    )
    settle_site_config(ctx, _Bus(), threading.Event())  # type: ignore[arg-type]
    assert state.adopted == []


def test_a_site_configuration_on_the_broker_is_adopted_when_none_is_stored() -> None:
    state = _Applied()
    seen = SimpleNamespace(site="site-a")
    ctx = SimpleNamespace(
        site_store=object(),
        site=SimpleNamespace(site="site-a", config=seen),
        latest_site=lambda: state.version,
        apply_site=lambda config, **kw: state.adopted.append((config, kw)),
        settings=SimpleNamespace(ui_seed_site_strings=""),
        bridge=SimpleNamespace(publish_site_config=lambda config: None),
    )
    settle_site_config(ctx, _Bus(), threading.Event())  # type: ignore[arg-type]
    assert [kw["source"] for _, kw in state.adopted] == ["adopted"]


def test_a_system_configuration_applied_while_waiting_is_not_adopted_again() -> None:
    state = _Applied()
    echo = SimpleNamespace(system_id="s1")

    class _Seen:
        def wait(self, timeout: float) -> bool:
            state.version = SimpleNamespace(config=echo)  # the user applied meanwhile
            return True

    ctx = SimpleNamespace(
        system="s1",
        publish_latest=lambda: None,
        latest=lambda: state.version,
        bridge=SimpleNamespace(config_seen=_Seen()),
        live=SimpleNamespace(broker_config=echo),
        apply=lambda config, **kw: state.adopted.append((config, kw)),
        settings=SimpleNamespace(ui_seed_config=""),
    )
    settle_config(ctx, _Bus(), threading.Event())  # type: ignore[arg-type]
    assert state.adopted == []
