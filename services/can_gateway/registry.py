"""The CAN profile registry: name -> (module, class), imported on first use.

Modelled on python-can's interface registry (`can.interfaces.BACKENDS`): a profile is a class
implementing `profile.Profile` in its own module; adding one means one line here and one name
in `shared.config.interfaces.CanProfile` (with its value ranges in `shared.config.can_ranges`),
never a change to the gateway loop.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import cast

from services.can_gateway.profile import Profile

PROFILES: Mapping[str, tuple[str, str]] = {
    "victron_0x35x": ("services.can_gateway.profiles", "Victron0x35x"),
    "pylon_v12": ("services.can_gateway.profiles", "PylonV12"),
    "pylon_hv": ("services.can_gateway.pylon_hv", "PylonHv"),
    "native": ("services.can_gateway.native", "Native"),
}


SITE_PROFILES = frozenset({"victron_0x35x", "pylon_v12", "pylon_hv"})
"""The profiles that serve a site (BMS_SITE) from the site as one pack (`site.site_pack`):
the inverter profiles. `native` carries one system's cells and commands and is refused for a
site."""


class UnknownProfileError(ValueError):
    pass


def load_profile(name: str) -> Profile:
    """A new instance of the profile `name`."""
    try:
        module_name, class_name = PROFILES[name]
    except KeyError:
        raise UnknownProfileError(
            f"CAN profile {name!r} is not registered; choose one of {', '.join(PROFILES)}"
        ) from None
    cls = getattr(importlib.import_module(module_name), class_name)
    return cast(Profile, cls())
