"""`python -m services.slave_agent inject`: people's 1-based module and channel numbers become
the contract's 0-based indices at the command line, and a number out of range is refused in
words naming the valid range (exit 2, no traceback, nothing published)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.slave_agent import inject as cli
from services.slave_agent.inject import CONTRACT, counts_of, place_indices
from shared.config import SystemConfig, demo_config
from shared.messages import SimControl
from shared.messages.slave import MAX_CELLS_PER_MODULE, MAX_MODULES, MAX_TEMPS_PER_MODULE


@given(
    st.integers(1, MAX_MODULES),
    st.integers(1, MAX_CELLS_PER_MODULE),
    st.sampled_from(["cell_drift", "open_wire", "stuck_sensor", "noisy_channel"]),
)
def test_numbers_from_one_become_indices_from_zero(module: int, cell: int, fault: str) -> None:
    assert place_indices(fault, module, cell, None) == (module - 1, cell - 1)


def test_nothing_named_stays_every_module_and_the_whole_module() -> None:
    assert place_indices("dropout", None, None, None) == (None, None)
    assert place_indices("cell_drift", 3, None, None) == (2, None)


@pytest.mark.parametrize("number", [0, -1, MAX_MODULES + 1])
def test_a_module_number_out_of_range_is_refused_naming_the_range(number: int) -> None:
    with pytest.raises(ValueError) as refused:
        place_indices("cell_drift", number, 1, None)
    assert str(refused.value) == (
        f"argument --module: module numbers run from 1 to {MAX_MODULES} in the message "
        f"contract (1 = the first), not {number}"
    )


@pytest.mark.parametrize("number", [0, -3, MAX_CELLS_PER_MODULE + 1])
def test_a_cell_number_out_of_range_is_refused_naming_the_range(number: int) -> None:
    with pytest.raises(ValueError, match=rf"^argument --channel: cell numbers run from 1 to "
                       rf"{MAX_CELLS_PER_MODULE} .*, not {number}$"):  # fmt: skip
        place_indices("open_wire", 1, number, None)


def test_temperature_faults_count_sensors() -> None:
    """over_temperature's natural target is a sensor; `--target temp` makes any fault one."""
    assert place_indices("over_temperature", 1, MAX_TEMPS_PER_MODULE, None) == (
        0, MAX_TEMPS_PER_MODULE - 1,
    )  # fmt: skip
    for fault, target in (("over_temperature", None), ("open_wire", "temp")):
        with pytest.raises(ValueError, match=rf"temperature sensor numbers run from 1 to "
                           rf"{MAX_TEMPS_PER_MODULE} "):  # fmt: skip
            place_indices(fault, 1, MAX_TEMPS_PER_MODULE + 1, target)
    # a cell of a temperature fault (`--target cell`) counts cells
    assert place_indices("over_temperature", 1, 65, "cell") == (0, 64)


def test_the_active_configuration_narrows_the_ranges() -> None:
    preset = SystemConfig.from_preset("LFP", system_id="t", modules=3, cells_per_module=8)
    # modules of 8, 8 and 5 cells (only the topology matters here)
    topology = preset.topology.model_validate(
        {**preset.topology.model_dump(), "module_cell_counts": [8, 8, 5]}
    )
    config = preset.model_copy(update={"topology": topology})
    counts = counts_of(config)
    assert place_indices("open_wire", 3, 5, None, counts) == (2, 4)
    with pytest.raises(ValueError, match=r"^argument --module: module numbers run from 1 to 3 "
                       r"in the active configuration \(1 = the first\), not 4$"):  # fmt: skip
        place_indices("open_wire", 4, None, None, counts)
    with pytest.raises(ValueError, match=r"cell numbers run from 1 to 5 in the active"):
        place_indices("open_wire", 3, 6, None, counts)
    with pytest.raises(ValueError, match=r"temperature sensor numbers run from 1 to 2 in"):
        place_indices("open_wire", 1, 3, "temp", counts)
    assert counts_of(demo_config()).modules == 7 and CONTRACT.modules == MAX_MODULES


Built = Callable[[SystemConfig | None], SimControl]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[Built]:
    """What `inject` would publish, without a broker: the builder it hands to publish_once."""
    builders: list[Built] = []

    def fake(_url: str, _system: str, _protocol: str, _spec: Any, message: Built) -> bool:
        builders.append(message)
        return True

    monkeypatch.setattr(cli, "publish_once", fake)
    return builders


def test_the_command_line_sends_contract_indices(published: list[Built]) -> None:
    argv = ["cell_drift", "--module", "2", "--channel", "3", "--value", "0.5"]
    assert cli.inject_main(argv) == 0
    without_config, with_demo = published[0](None), published[0](demo_config())
    for control in (without_config, with_demo):
        assert (control.fault, control.module, control.channel) == ("cell_drift", 1, 2)


def test_the_active_configuration_refuses_a_module_past_it(published: list[Built]) -> None:
    assert cli.inject_main(["open_wire", "--module", "8", "--channel", "1"]) == 0
    with pytest.raises(ValueError, match="module numbers run from 1 to 7 in the active"):
        published[0](demo_config())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--module", "0"], "argument --module: module numbers run from 1 to 196 in the "
                            "message contract (1 = the first), not 0"),
        (["--module", "1", "--channel", "0"], "argument --channel: cell numbers run from 1"),
        (["--module", "-2"], "module numbers run from 1 to 196"),
        (["--module", "two"], "argument --module: module numbers are whole numbers counted "
                              "from 1, not 'two'"),
        (["--channel", "1.5"], "argument --channel: channel numbers are whole numbers"),
    ],
)  # fmt: skip
def test_the_command_line_refuses_in_words(
    args: list[str], message: str, published: list[Built], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.inject_main(["open_wire", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert published == []  # refused before any broker is looked for


def test_the_help_says_one_based(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.inject_main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "module number, 1-based (1 = the first module" in out
    assert "sensor number within the module, 1-based" in out
