"""`python -m services.plant inject`: people's 1-based module and channel numbers become the
contract's 0-based indices of `PlantControl`, checked against the active configuration when
the broker has one; a number out of range is refused in words (exit 2, nothing published)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from services.plant import inject as cli
from shared.config import SystemConfig, demo_config
from shared.messages import PlantControl
from shared.messages.slave import MAX_MODULES

Built = Callable[[SystemConfig | None], PlantControl]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[Built]:
    builders: list[Built] = []

    def fake(_url: str, _system: str, _protocol: str, _spec: Any, message: Built) -> bool:
        builders.append(message)
        return True

    monkeypatch.setattr(cli, "publish_once", fake)
    return builders


@pytest.mark.parametrize(
    ("argv", "module", "channel"),
    [
        (["open_wire", "--module", "3", "--channel", "8"], 2, 7),
        (["board_dropout", "--module", "1"], 0, None),
        (["over_temperature", "--module", "7", "--channel", "2", "--value", "70"], 6, 1),
        (["stuck_sensor", "--module", "1", "--channel", "2", "--target", "temp"], 0, 1),
        (["cell_drift", "--value", "0.1"], None, None),
    ],
)
def test_the_command_line_sends_contract_indices(
    argv: list[str], module: int | None, channel: int | None, published: list[Built]
) -> None:
    assert cli.inject_main(argv) == 0
    for config in (None, demo_config()):
        control = published[0](config)
        assert (control.module, control.channel) == (module, channel)


def test_plant_faults_without_a_place_are_untouched(published: list[Built]) -> None:
    assert cli.inject_main(["contactor_weld", "--contactor", "main_positive"]) == 0
    control = published[0](demo_config())
    assert (control.contactor, control.module, control.channel) == ("main_positive", None, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["board_dropout", "--module", "0"], f"argument --module: module numbers run from 1 to "
                                             f"{MAX_MODULES} in the message contract (1 = the "
                                             f"first), not 0"),
        (["open_wire", "--module", "1", "--channel", "0"], "cell numbers run from 1 to 196"),
        (["over_temperature", "--module", "1", "--channel", "65", "--value", "60"],
         "argument --channel: temperature sensor numbers run from 1 to 64"),
        (["board_dropout", "--module", "M2"], "module numbers are whole numbers counted from 1"),
    ],
)  # fmt: skip
def test_the_command_line_refuses_in_words(
    argv: list[str], message: str, published: list[Built], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.inject_main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert published == []


def test_a_module_past_the_active_configuration_is_refused(published: list[Built]) -> None:
    """The demo system has 7 modules: module 8 passes the contract, not the configuration."""
    assert cli.inject_main(["board_dropout", "--module", "8"]) == 0
    assert published[0](None).module == 7
    with pytest.raises(ValueError, match=r"^argument --module: module numbers run from 1 to 7 "
                       r"in the active configuration \(1 = the first\), not 8$"):  # fmt: skip
        published[0](demo_config())


def test_the_help_says_one_based(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.inject_main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Modules and channels are 1-based" in out
    assert "module number, 1-based" in out and "number within the module, 1-based" in out
