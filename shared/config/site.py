"""The site configuration: up to `SITE_STRINGS_MAX` strings in parallel on one DC bus, one
battery to its inverter and SCADA.

A site id follows the rule of a system id (one MQTT topic level, `SYSTEM_ID_RE`); the site's
own topics live under `bms/v1/{site}/site/...`, so a site id must not be one of its strings'
system ids. Published retained on `site/config` by the web application; the site controller
(services/site_controller) reads it.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator

from shared.config._base import ConfigModel, raise_problems
from shared.config.limits import SITE_STRINGS_MAX
from shared.config.system import SYSTEM_ID_RE

DEFAULT_JOIN_WINDOW_V = 2.0
"""|V_string - V_bus| at which a string may close onto the bus. The current that flows at
the close is ΔV / (R_string + R_bus) (Ohm's law; R_bus is the other strings in parallel): a
high-voltage string of 150-200 cells at 0.3-0.5 mΩ each with cabling and fuse is about
100 mΩ, so 2 V drives about 10 A into one other string, 0.1 C of a 100 Ah string. Per cell
that is 10-13 mV, the order vendors ask of parallel 48 V modules (Discover HELIOS ESS parallel
installation guide: within 50 mV per 16-cell module, 3 mV per cell, at their lower module
resistance). With resistances configured, size it as I_allowed x (R_k + R_bus)."""
DEFAULT_CURRENT_SHARING_FACTOR = 0.9
DEFAULT_STALE_AFTER_S = 2.0
"""20 periods of the master's 10 Hz `pack/state`: a string that said nothing for this long is
stale and leaves the site's sums at once."""
JOIN_WINDOW_MAX_V = 50.0
STRING_RESISTANCE_MAX_MOHM = 10_000.0


def _system_id_problem(field: str, value: str) -> str | None:
    if SYSTEM_ID_RE.match(value):
        return None
    return (
        f"{field}: {value!r} is not valid: use 1 to 32 characters of lower-case letters, "
        f"digits, '_' or '-', starting with a letter or digit (it is used as an MQTT topic level)"
    )


class SiteString(ConfigModel):
    """One string of the site: a system with its own master."""

    system: str = Field(json_schema_extra={"maxLength": 32})  # SYSTEM_ID_RE checks it
    """The string's system id (its master's BMS_SYSTEM)."""
    resistance_mohm: float | None = Field(None, gt=0.0, le=STRING_RESISTANCE_MAX_MOHM)
    """DC resistance of the string from its cells to the common bus (cells, connectors,
    cabling, fuse), in mΩ: current divides between parallel strings in inverse proportion to
    it. Empty: unknown, equal sharing is assumed."""
    in_service: bool = True
    """False: taken out of the site (maintenance): the site controller puts its master in
    standby, leaves it out of the bus and the sums ("out", with the reason), and never joins it
    until it is in service again."""

    @field_validator("system")
    @classmethod
    def _system(cls, value: str) -> str:
        problem = _system_id_problem("system", value)
        if problem:
            raise ValueError(problem.removeprefix("system: "))
        return value


class SiteConfig(ConfigModel):
    """A site: strings in parallel on one DC bus, one battery to its inverter and SCADA."""

    site: str = Field(json_schema_extra={"maxLength": 32})  # SYSTEM_ID_RE checks it
    """The site id, the system level of the site's topics (`bms/v1/{site}/site/...`): the
    rule of a system id, and none of its strings' ids."""
    name: str = Field("", max_length=100)
    """A name for people, shown on the site page."""
    config_version: int = Field(1, ge=0)
    """Numbered by the configuration store, one more per applied version; the site controller
    acknowledges it and carries it in `site/state`."""
    strings: tuple[SiteString, ...] = Field(min_length=1, max_length=SITE_STRINGS_MAX)
    """1 to 16 strings, each system id once."""
    join_window_v: float = Field(DEFAULT_JOIN_WINDOW_V, gt=0.0, le=JOIN_WINDOW_MAX_V)
    """A string closes onto the DC bus only when |V_string - V_bus| is at most this; others
    wait (see `DEFAULT_JOIN_WINDOW_V` for the default's basis)."""
    current_sharing_factor: float = Field(DEFAULT_CURRENT_SHARING_FACTOR, gt=0.0, le=1.0)
    """Derates the summed charge and discharge currents: parallel strings never share exactly
    as computed (resistances drift with temperature and age, contact resistance)."""
    stale_after_s: float = Field(DEFAULT_STALE_AFTER_S, ge=0.5, le=60.0)
    """A string whose `pack/state` is older than this is stale and leaves the site's sums."""

    @field_validator("site")
    @classmethod
    def _site(cls, value: str) -> str:
        problem = _system_id_problem("site", value)
        if problem:
            raise ValueError(problem.removeprefix("site: "))
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # each problem names the field it is at (`strings.{i}.system`), for the form to show it
        problems: list[str] = []
        ids = [s.system for s in self.strings]
        for i, system in enumerate(ids):
            first = ids.index(system)
            if first != i:
                problems.append(
                    f"strings.{i}.system: each system id may appear once; {system!r} is listed "
                    f"twice (also string {first + 1})"
                )
        if self.site in ids:
            problems.append(
                f"site, strings.{ids.index(self.site)}.system: {self.site!r} is also the id of "
                f"one of its strings; the site's topics would mix with that string's: give the "
                f"site an id of its own"
            )
        raise_problems(problems)
        return self

    @property
    def system_ids(self) -> tuple[str, ...]:
        return tuple(s.system for s in self.strings)

    def in_service(self, system: str) -> bool:
        """False when the string is taken out in the configuration (or not a string of it)."""
        return any(s.system == system and s.in_service for s in self.strings)

    def resistance_ohm(self, system: str) -> float | None:
        """The string's resistance in Ω, or None when unknown (or not a string of the site)."""
        for s in self.strings:
            if s.system == system:
                return None if s.resistance_mohm is None else s.resistance_mohm / 1000.0
        return None
