"""What clearing each latched protection code needs: the one table protection and the UI read.

- "release": a normal `reset_faults`, once the condition has released.
- "service": additionally a service override (`cmd/service_reset`, admin only), because the
  cause may have damaged the battery (a deep-discharged cell can short internally on charge).

Codes not listed need "release". Kept as data, ready to join the `ProtectionCode` metadata.
"""

from __future__ import annotations

from typing import Literal

ResetNeed = Literal["release", "service"]

RESET_NEEDS: dict[str, ResetNeed] = {
    "deep_discharge": "service",
}


def reset_need(code: str) -> ResetNeed:
    """What a reset of `code` needs."""
    return RESET_NEEDS.get(code, "release")
