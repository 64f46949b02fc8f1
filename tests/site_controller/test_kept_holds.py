"""A restart of the site controller keeps what people decided: a disconnected site stays
disconnected and a held string stays out (a real SQLite file), until they say otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.site_controller.core import SiteCore
from services.site_controller.service import HOLDS_KEY, SiteService
from services.site_controller.settings import SiteControllerSettings
from shared.bus.memory import InMemoryBroker, InMemoryBus
from shared.commands import CommandClient
from shared.config import SiteConfig
from shared.event_store import Store
from shared.messages import (
    CommandArgs,
    CommandReply,
    SiteConfigMessage,
    SiteOperationArgs,
    SiteState,
    SiteStringArgs,
)
from shared.topics import SITE_CONFIG, SITE_STATE
from tests.site_controller.test_core import _config
from tests.site_controller.test_service import FakeMaster

SYSTEMS = ("s1", "s2", "s3")


@given(
    disconnected=st.booleans(),
    held=st.dictionaries(st.sampled_from(SYSTEMS), st.booleans()),
)
def test_holds_round_trip_through_a_new_core(disconnected: bool, held: dict[str, bool]) -> None:
    core = SiteCore(_config())
    for system, by_operator in held.items():
        if by_operator:
            core.hold(system, "held out by an operator")
    if disconnected:
        core.disconnect("disconnected by SCADA")
    again = SiteCore(_config())
    again.restore_holds(core.holds())
    assert again.holds() == core.holds()
    assert again.disconnected == core.disconnected


@pytest.mark.parametrize(
    "kept",
    [
        [],
        {"disconnected": 3, "held": {}},
        {"disconnected": None, "held": []},
        {"disconnected": None, "held": {"s1": {"why": None}}},
    ],
)
def test_kept_holds_of_another_shape_are_refused_and_change_nothing(kept: Any) -> None:
    core = SiteCore(_config())
    with pytest.raises(ValueError):
        core.restore_holds(kept)
    assert core.holds() == {"disconnected": None, "held": {}}


class Site:
    """The site controller on an in-memory bus with fake masters, on a real SQLite file."""

    def __init__(self, broker: InMemoryBroker, path: Path, masters: dict[str, FakeMaster]):
        self.clock = [0.0]
        self.store = Store(path)
        self.bus = InMemoryBus(broker, system="site1", service="site_controller",
                               kind="site_controller")  # fmt: skip
        self.bus.start()
        self.service = SiteService(
            self.bus, SiteControllerSettings(system="site1"), monotonic=lambda: self.clock[0],
            store=self.store,
        )  # fmt: skip
        self.ui = InMemoryBus(broker, system="site1", service="config_ui", kind="config_ui")
        self.ui.start()
        self.states: list[SiteState] = []
        self.ui.subscribe(SITE_STATE, lambda d: self.states.append(d.message))
        self.client = CommandClient(self.ui, system="site1")
        self.masters = masters
        config = SiteConfig(site="site1", strings=[{"system": s} for s in ("s1", "s2")])  # type: ignore[misc]
        self.ui.publish(SITE_CONFIG, SiteConfigMessage(config=config))

    def cycle(self, n: int = 1) -> None:
        for _ in range(n):
            for m in self.masters.values():
                m.publish()
            self.bus.process()
            self.service.tick()
            self.clock[0] += 0.1
            self.ui.process()

    def ask(self, name: str, args: CommandArgs) -> CommandReply:
        replies: list[CommandReply | None] = []
        self.client.send(name, args, on_reply=replies.append)
        self.cycle(2)
        assert replies and replies[-1] is not None and replies[-1].status == "accepted", replies
        return replies[-1]

    def members(self) -> dict[str, str]:
        return {s.system: s.membership for s in self.states[-1].strings}

    def close(self) -> None:
        self.bus.stop()
        self.store.close()


def test_a_restart_keeps_the_disconnect_and_an_operators_hold(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    masters = {s: FakeMaster(broker, s, 400.0) for s in ("s1", "s2")}
    path = tmp_path / "site_controller-site1.sqlite"
    site = Site(broker, path, masters)
    site.cycle(20)
    assert site.members() == {"s1": "joined", "s2": "joined"}
    site.ask("site_string", SiteStringArgs(system="s2", action="out"))
    site.ask("site_operation", SiteOperationArgs(action="disconnect", by="scada"))
    site.cycle(10)
    assert site.members() == {"s1": "out", "s2": "out"}
    site.close()

    # the controller restarts; the masters restart too, in working mode with closed contactors
    for m in masters.values():
        m.fields.update(mode="working", contactors="closed")
    again = Site(broker, path, masters)
    again.cycle(20)
    state = again.states[-1]
    assert state.operation == "disconnect" and state.strings_joined == 0
    assert again.members() == {"s1": "out", "s2": "out"}
    assert all(m.fields["mode"] == "standby" for m in masters.values())
    reasons = {s.system: s.reason for s in state.strings}
    assert reasons["s1"].startswith("disconnected by SCADA")
    assert reasons["s2"].startswith("held out by an operator")

    # connect releases what the disconnect held; the operator's hold stays
    again.ask("site_operation", SiteOperationArgs(action="connect", by="scada"))
    again.cycle(20)
    assert again.members() == {"s1": "joined", "s2": "out"}
    again.close()
    assert Store(path).get(HOLDS_KEY) == {
        "disconnected": None,
        "held": {"s2": {"why": "held out by an operator", "by_disconnect": False}},
    }


def test_kept_holds_that_cannot_be_read_are_refused_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "site_controller-site1.sqlite"
    store = Store(path)
    store.put(HOLDS_KEY, {"disconnected": 1}, ts=0.0)
    store.close()
    broker = InMemoryBroker()
    masters = {s: FakeMaster(broker, s, 400.0) for s in ("s1", "s2")}
    site = Site(broker, path, masters)
    site.cycle(20)
    assert site.bus.counters["holds_restore_refused"] == 1
    assert site.members() == {"s1": "joined", "s2": "joined"}
    site.close()
