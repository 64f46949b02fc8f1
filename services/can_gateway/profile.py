"""What a CAN profile is (`Profile`), what it sees each cycle (`PackView`) and what it asks of
the gateway when a frame arrives (`Handling`). The gateway loop (`service.py`) knows profiles
only through this protocol and the registry (`registry.py`), so a new profile never touches it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from services.can_gateway.codec import Frame, FrameBatch
from services.can_gateway.site import SiteFacts
from shared.config.system import SystemConfig
from shared.messages import CellSnapshot, CommandArgs, CommandReply, PackState


@dataclass(frozen=True)
class ProtocolOptions:
    """Protocol parameters of the profiles: from `interfaces.can`, or a BMS_* override."""

    pylon_hv_byte_order: Literal["little", "big"] = "little"
    pylon_hv_current_offset_a: float = 3000.0
    pylon_hv_discharge_limit_sign: Literal["negative", "positive"] = "negative"


@dataclass(frozen=True)
class PackView:
    """One cycle's view of the system: the latest pack state (even when stale), its age verdict,
    the latest cell snapshot, the configuration and the protocol options."""

    config: SystemConfig
    pack: PackState | None = None
    stale: bool = True
    cells: CellSnapshot | None = None
    options: ProtocolOptions = ProtocolOptions()
    site: SiteFacts | None = None
    """A site (BMS_SITE): `pack` is the site as one pack (`site.site_pack`), and these facts
    stand in for the system's configuration where a profile counts modules or capacity."""

    @property
    def modules(self) -> int:
        """Modules of the battery; a site's strings count as its modules."""
        return self.config.topology.modules if self.site is None else self.site.strings

    @property
    def battery_name(self) -> str:
        return (self.config.name or self.config.system_id) if self.site is None else self.site.name

    @property
    def capacity_ah(self) -> float | None:
        """Nominal capacity; a site's is its strings' summed (None while one is unknown)."""
        return self.config.cell_capacity_ah if self.site is None else self.site.capacity_ah

    @property
    def fresh(self) -> PackState | None:
        """The pack state if it is current, else None: measurements come only from this."""
        return None if self.stale else self.pack

    @property
    def known(self) -> PackState | None:
        """The fresh pack state if its voltage, current and cell extremes are known, else None.

        Limits and the absence of alarms are passed on only from a known pack; an unknown or
        stale pack gets the fail-safe limits (0 A) of each profile.
        """
        p = self.fresh
        if p is None or None in (p.voltage, p.current, p.cell_v_min, p.cell_v_max):
            return None
        return p


@dataclass(frozen=True)
class MasterRequest:
    """A command for the master; `on_reply` turns its reply (None: timeout) into frames."""

    command: str
    args: CommandArgs
    on_reply: Callable[[CommandReply | None], list[Frame]] | None = None


@dataclass
class Handling:
    """What a received frame asks of the gateway."""

    frames: list[Frame] = field(default_factory=list)
    """Sent at once (answers to a request, acknowledgements)."""
    requests: list[MasterRequest] = field(default_factory=list)
    keepalive: bool = False
    """The frame shows the inverter is alive."""
    refused: list[str] = field(default_factory=list)
    """Why the frame was not acted on (counted and logged by the gateway)."""


class Profile(Protocol):
    """A CAN profile: its period, its frames, and its handling of received frames."""

    name: str
    period_s: float | None
    """Each cyclic frame id is sent once per period; None: the profile sends nothing unasked."""
    supervises_keepalive: bool
    """An inverter profile: its silence raises `inverter_keepalive_lost`."""

    def cyclic(self, view: PackView) -> FrameBatch:
        """The frames of one period, each id once (replaced in one pass, never mixed)."""
        ...

    def burst(self, view: PackView) -> FrameBatch:
        """Frames sent once in this gateway cycle (e.g. a slice of multiplexed frames)."""
        ...

    def accepts(self, arbitration_id: int, is_extended_id: bool) -> bool:
        """True for a frame this profile reads."""
        ...

    def handle(self, arbitration_id: int, data: bytes, view: PackView) -> Handling:
        """Act on an accepted frame (pure: the gateway sends and forwards what it returns)."""
        ...


def is_extended(frame_id: int) -> bool:
    return frame_id > 0x7FF
