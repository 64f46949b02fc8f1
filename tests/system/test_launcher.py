"""The launcher's choice between the loop and the in-process simulation (no processes)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from services import launcher
from services.config_ui.config_store import ConfigStore
from services.launcher import Launcher, plant_wiring
from shared.config import SystemConfig, demo_config, plant_demo_config


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, systems: int = 1) -> Launcher:
    monkeypatch.setenv("BMS_DATA_DIR", str(tmp_path))
    args = argparse.Namespace(in_process=False, systems=systems)
    return Launcher(args)


def store(tmp_path: Path, system: str, config: SystemConfig) -> None:
    with ConfigStore(tmp_path / f"config_ui-{system}.sqlite") as s:
        s.save(config, user="system", source="seed", comment="test")


def test_multicast_and_a_fresh_store_run_in_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("shared.can_bus.multicast_problem", lambda: None)
    run = make(tmp_path, monkeypatch, systems=2)
    run.choose_simulation()
    assert run.in_loop
    assert run.config_of("demo2") == plant_demo_config("demo2", 1)
    assert "software in the loop" in capsys.readouterr().out


def test_without_multicast_it_falls_back_and_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("shared.can_bus.multicast_problem", lambda: "no multicast route")
    run = make(tmp_path, monkeypatch)
    run.choose_simulation()
    assert not run.in_loop
    assert run.config_of("demo") == demo_config("demo")
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "no multicast route: falling back" in out[0]
    assert [p.name for p in launcher.available_services(plant=False)].count("plant") == 0


def test_a_stored_configuration_off_the_plant_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("shared.can_bus.multicast_problem", lambda: None)
    store(tmp_path, "demo", demo_config("demo"))  # an earlier run's demo, on socketcan
    run = make(tmp_path, monkeypatch)
    run.choose_simulation()
    assert not run.in_loop
    assert "puts its devices elsewhere" in capsys.readouterr().out


def test_a_stored_configuration_on_the_plant_stays_in_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.can_bus.multicast_problem", lambda: None)
    config = plant_demo_config("demo", 0)
    # a threshold changed in the UI does not move a device
    changed = config.model_copy(update={"name": "renamed"})
    store(tmp_path, "demo", changed)
    assert plant_wiring(changed) == plant_wiring(config)
    run = make(tmp_path, monkeypatch)
    run.choose_simulation()
    assert run.in_loop


def test_a_site_runs_its_controller_under_the_site_id_and_masters_without_auto_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BMS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("BMS_AUTO_CLOSE", raising=False)
    run = Launcher(argparse.Namespace(in_process=True, systems=2, site="site1"))
    run.plan_children("mqtt://127.0.0.1:1")
    env = {c.label: c.env for c in run.children}
    assert env["site_controller"]["BMS_SYSTEM"] == "site1"
    masters = [e for label, e in env.items() if label.startswith("master_core")]
    assert len(masters) == 2 and all(e["BMS_AUTO_CLOSE"] == "false" for e in masters)
    assert launcher.site_config("site1", run.systems).system_ids == ("demo1", "demo2")
    plain = Launcher(argparse.Namespace(in_process=True, systems=2))
    plain.plan_children("mqtt://127.0.0.1:1")
    assert not any(c.label == "site_controller" for c in plain.children)
    assert all("BMS_AUTO_CLOSE" not in c.env for c in plain.children)


def test_with_a_site_the_web_applications_one_modbus_gateway_and_the_bridge_serve_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BMS_SITE", raising=False)
    monkeypatch.delenv("BMS_SITE_TCP_PORT", raising=False)
    monkeypatch.setenv("BMS_DATA_DIR", str(tmp_path))
    run = Launcher(argparse.Namespace(in_process=True, systems=2, site="site1"))
    run.plan_children("mqtt://127.0.0.1:1883")
    uis = [c for c in run.children if c.env.get("BMS_UI_PORT")]
    assert len(uis) == 2 and all(c.env["BMS_SITE"] == "site1" for c in uis)
    # the first string's web application keeps the site configuration, seeded with every string
    keepers = [c for c in uis if c.env.get("BMS_UI_SITE_CONFIG") == "true"]
    assert len(keepers) == 1 and keepers[0].env["BMS_SYSTEM"] == "demo1"
    assert keepers[0].env["BMS_UI_SEED_SITE_STRINGS"] == "demo1,demo2"
    site_modbus = [c for c in run.children if c.label == "modbus_gateway:site1"]
    assert len(site_modbus) == 1
    env = site_modbus[0].env
    assert env["BMS_SYSTEM"] == env["BMS_SITE"] == "site1"
    assert env["BMS_TCP_PORT"] == "5022" and env["BMS_RTU_ENABLED"] == "false"
    # the integrations bridge follows the site as one more device
    (bridge,) = [c for c in run.children if c.label == "integrations"]
    assert bridge.env["BMS_SITE"] == "site1" and bridge.env["BMS_SYSTEM"] == "demo1"
    others = [c for c in run.children if c not in (*uis, *site_modbus, bridge)]
    assert others and all("BMS_SITE" not in c.env for c in others)


@pytest.mark.parametrize("site", [None, "site1"])
def test_the_shared_master_layout_runs_one_master_for_every_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, site: str | None
) -> None:
    """`--master-layout shared`: one master child hosting every system (BMS_SYSTEMS), with a
    site's auto-close off as before; the other services stay one per system. The default
    layout keeps a master per system."""
    monkeypatch.setenv("BMS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("BMS_SYSTEMS", raising=False)
    args = argparse.Namespace(in_process=True, systems=3, site=site, master_layout="shared")
    run = Launcher(args)
    run.plan_children("mqtt://127.0.0.1:1")
    masters = [c for c in run.children if c.argv[-1] == "services.master_core"]
    assert [c.label for c in masters] == ["master_core"]
    assert masters[0].env["BMS_SYSTEMS"] == "demo1,demo2,demo3"
    assert masters[0].env["BMS_HARDWARE"] == "simulated"
    assert (masters[0].env.get("BMS_AUTO_CLOSE") == "false") == (site is not None)
    agents = [c for c in run.children if c.argv[-1] == "services.slave_agent"]
    assert len(agents) == 3
    per_process = Launcher(argparse.Namespace(in_process=True, systems=3, site=site))
    per_process.plan_children("mqtt://127.0.0.1:1")
    labels = [c.label for c in per_process.children if c.argv[-1] == "services.master_core"]
    assert labels == ["master_core:demo1", "master_core:demo2", "master_core:demo3"]
    assert all("BMS_SYSTEMS" not in c.env for c in per_process.children)
