"""Valid payloads with plain defaults; tests override only the fields they are about."""

from __future__ import annotations

from typing import Any

from shared.messages import Limits, PackState
from shared.messages.site import SiteLimits, SiteState, StringState


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


def site_state(**overrides: Any) -> SiteState:
    """A site of three strings, two joined; `limits` overrides take a dict of its fields."""
    lim: dict[str, Any] = dict(
        charge_voltage_v=29.0, discharge_voltage_v=24.0, charge_current_a=75.5,
        discharge_current_a=111.5,
    )  # fmt: skip
    base: dict[str, Any] = dict(
        site="site1", soc=41.5, soh=99.0, voltage_v=26.2, current_a=-23.0, power_w=-602.6,
        energy_in_wh=1200.0, energy_out_wh=900.0, soc_std=2.5, since_anchor_s=3600.0,
        full_charge_requested=False, faults=[], alarms=["cell_ov"], warnings=[],
        strings_total=3, strings_joined=2, operation="connect",
        strings=[StringState(system=s, membership=m)
                 for s, m in (("s1", "joined"), ("s2", "joined"), ("s3", "waiting"))],
    )  # fmt: skip
    fields = base | overrides
    fields["limits"] = SiteLimits.model_validate(lim | overrides.get("limits", {}))
    return SiteState.model_validate(fields)
