"""Valid payloads with plain defaults; tests override only the fields they are about."""

from __future__ import annotations

from typing import Any

from shared.messages import Limits, PackState


def limits(**overrides: Any) -> Limits:
    base: dict[str, Any] = dict(
        charge_voltage_v=34.0, discharge_voltage_v=26.0, charge_current_a=50.0,
        discharge_current_a=50.0,
    )  # fmt: skip
    return Limits.model_validate(base | overrides)


def pack_state(*, limits_: Limits | None = None, **overrides: Any) -> PackState:
    base: dict[str, Any] = dict(
        soc=50.0, soh=100.0, voltage=30.0, current=0.0, contactors="closed", mode="working",
        cell_v_min=3.6, cell_v_max=3.7, cell_v_avg=3.65,
    )  # fmt: skip
    return PackState.model_validate(base | overrides | {"limits": limits_ or limits()})
