"""A site: up to 16 strings (systems) in parallel on one DC bus, published as one battery.

`SiteState` (`site/state`, 10 Hz or on change, retained) is what the gateways serve to the
inverter and SCADA: the site's values, its limits and each string's membership with its
reason in words. `SiteSummary` (`site/summary`, every 10 s or on change) is the small record
a fleet view keeps per site. Every measured or estimated value is None while unknown, never
0. Current is positive while charging, as in `PackState`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.config.limits import SITE_STRINGS_MAX
from shared.config.site import SiteConfig
from shared.messages.envelope import Message, Timestamp
from shared.messages.events import EventLevel
from shared.messages.pack import (
    PACK_AMPS_MAX,
    Code,
    ContactorState,
    Limits,
    PackAmps,
    PackVolts,
    Percent,
)
from shared.messages.slave import SlaveMode

SITE_CURRENT_MAX_A = SITE_STRINGS_MAX * PACK_AMPS_MAX
"""16 strings x the bound of one string's current and limits in `PackState`."""
SiteAmps = Annotated[
    float, Field(ge=-SITE_CURRENT_MAX_A, le=SITE_CURRENT_MAX_A, allow_inf_nan=False)
]
SiteNonNegAmps = Annotated[float, Field(ge=0.0, le=SITE_CURRENT_MAX_A, allow_inf_nan=False)]
SitePower = Annotated[float, Field(ge=-2.0e7, le=2.0e7, allow_inf_nan=False)]
"""W: 16 x 1000 A x 1200 V bounds it with room."""
Energy = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
SystemId = Annotated[str, Field(max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
Reason = Annotated[str, Field(max_length=200)]
SiteOperation = Literal["connect", "disconnect"]

Membership = Literal["joined", "waiting", "leaving", "out", "fault", "stale"]
"""A string's place in the site:

- joined: closed onto the DC bus, counted in the site's sums and limits;
- waiting: healthy but not on the bus, e.g. its voltage is outside the join window (`reason`
  says by how much and what it waits for);
- leaving: commanded to standby, its contactors still closed; already out of the sums;
- out: not on the bus and not asked to join (no pack state yet, standby by an operator);
- fault: its master reports a fault or its contactors are in fault: out of the sums at once;
- stale: no `pack/state` within `stale_after_s`: out of the sums at once."""
MEMBERSHIPS: tuple[Membership, ...] = ("joined", "waiting", "leaving", "out", "fault", "stale")
WorstLevel = EventLevel | None


class SiteLimits(BaseModel):
    """The site's limits for the inverter, positive magnitudes, with the reason that sets each.

    Voltages are None while no string is joined (nothing says what the bus may take); currents
    are then 0 A, a real limit (no string can take current)."""

    model_config = ConfigDict(frozen=True, strict=True)

    charge_voltage_v: PackVolts | None
    """The lowest CVL of the joined strings."""
    discharge_voltage_v: PackVolts | None
    """The highest discharge voltage limit of the joined strings."""
    charge_current_a: SiteNonNegAmps
    discharge_current_a: SiteNonNegAmps
    charge_reason: Reason = ""
    discharge_reason: Reason = ""
    charge_voltage_reason: Reason = ""


class StringState(BaseModel):
    """One string as the site sees it: its membership with the reason in words and its own
    values, from its master's `pack/state` (None when unknown)."""

    model_config = ConfigDict(frozen=True, strict=True)

    system: SystemId
    membership: Membership
    reason: Reason = ""
    """Why it has this membership, in words (e.g. "3.4 V above the bus, waits for the bus to
    rise")."""
    soc: Percent | None = None
    soh: Percent | None = None
    voltage_v: PackVolts | None = None
    current_a: PackAmps | None = None
    capacity_ah: float | None = Field(None, gt=0.0, le=10_000.0, allow_inf_nan=False)
    """Nominal capacity (the string's configured cell capacity); None until its configuration
    was read."""
    resistance_ohm: float | None = Field(None, gt=0.0, le=10.0, allow_inf_nan=False)
    """As configured in the site configuration; None: unknown (equal sharing assumed)."""
    limits: Limits | None = None
    """Its own limits, as its master publishes them; None before its first pack state."""
    contactors: ContactorState | None = None
    mode: SlaveMode | None = None
    age_s: float | None = Field(None, ge=0.0, le=1.0e9, allow_inf_nan=False)
    """Age of its last pack state when this was published."""
    worst_level: WorstLevel = None
    """The highest level active in the string: fault, alarm or warning; None when none is."""
    worst_code: Code | None = None


class SiteState(Message):
    """The state of a site, one battery to its inverter and SCADA (10 Hz or on change).

    Sums and weighted values are over the joined strings only. `soc` is weighted by each
    string's usable capacity (capacity x SOH), `soh` by its nominal capacity; either is None
    when a joined string's value is unknown, or when no string is joined."""

    site: SystemId
    soc: Percent | None = None
    soh: Percent | None = None
    voltage_v: PackVolts | None = None
    """The DC bus voltage: the mean of the joined strings' voltages (they share the bus)."""
    current_a: SiteAmps | None = None
    """Sum of the joined strings' currents; None when one of them is unknown."""
    power_w: SitePower | None = None
    energy_in_wh: Energy | None = None
    """Sum over every string of the site (energy counts whether or not a string is joined);
    None when one is unknown."""
    energy_out_wh: Energy | None = None
    soc_std: Percent | None = None
    """1-sigma uncertainty of `soc`, in % SOC: the largest of the joined strings'
    (`PackState.soc_std`). The site's SOC is a weighted mean of theirs, and the sigma of a
    weighted mean (weights summing to 1) is at most the weighted mean of the sigmas, whatever
    the strings' errors have in common, so at most the largest: an upper bound, never an
    understatement. None when a joined string's is unknown, or when no string is joined."""
    since_anchor_s: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    """Seconds since the oldest of the joined strings' last anchors (`PackState.since_anchor_s`):
    the site's SOC is only as fresh as its least recently anchored string. None when a joined
    string has no known anchor, or when no string is joined."""
    full_charge_requested: bool | None = None
    """A joined string's master asks for a full charge (`PackState.full_charge_requested`;
    the strings in parallel charge together, so one string's anchor needs the whole site
    full): True when any joined string asks, False when every joined string says it does
    not, None otherwise (no string joined, or a joined string does not say and none asks).
    The site's CAN output (`services.can_gateway.site`) applies the same rule."""
    limits: SiteLimits
    faults: list[Code] = Field(default_factory=list, max_length=64, fail_fast=True)
    """Codes active in any string of the site that is not stale (each once)."""
    alarms: list[Code] = Field(default_factory=list, max_length=64, fail_fast=True)
    warnings: list[Code] = Field(default_factory=list, max_length=64, fail_fast=True)
    strings_total: int = Field(ge=0, le=SITE_STRINGS_MAX)
    strings_joined: int = Field(ge=0, le=SITE_STRINGS_MAX)
    config_version: int | None = Field(None, ge=0)
    """The site configuration this state was computed with."""
    operation: SiteOperation = "connect"
    """What SCADA or an operator last asked of the site (the site command `site_operation`):
    `disconnect` holds every string out (standby) until `connect`."""
    strings: list[StringState] = Field(
        default_factory=list, max_length=SITE_STRINGS_MAX, fail_fast=True
    )
    """Every string of the configuration, in its order."""


class SiteSummary(Message):
    """The small record of a site for a fleet view (every 10 s, and on a change of membership,
    worst level or online).

    Gaps: the envelope's `seq` counts up by one per summary within `seq_epoch` (the site
    controller's start); a receiver that sees a jump knows how many it missed, a new epoch
    starts a new count."""

    seq_epoch: Timestamp | None = None
    site: SystemId
    online: bool
    """The site controller runs and has its configuration (its last will sets presence
    offline on `service/site_controller/status`; a summary says false when it stops cleanly)."""
    strings_total: int = Field(ge=0, le=SITE_STRINGS_MAX)
    strings_joined: int = Field(ge=0, le=SITE_STRINGS_MAX)
    soc: Percent | None = None
    power_w: SitePower | None = None
    worst_level: WorstLevel = None
    """The highest level active anywhere in the site; None when nothing is active."""
    worst_code: Code | None = None


class SiteConfigMessage(Message):
    """The retained site configuration (`site/config`)."""

    # The configuration carries its own validation; strict typing would refuse msgpack lists
    # where the model keeps tuples (as `ConfigMessage`).
    model_config = ConfigDict(extra="ignore", frozen=True, strict=False)

    config: SiteConfig
