"""Every service acknowledges each configuration it receives, so the UI can show who runs what."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from shared.bus.core import BusCore
from shared.messages import ConfigAck, FieldInUse
from shared.messages.config import IN_USE_MAX
from shared.topics import CONFIG_ACK

log = logging.getLogger("shared.config_ack")


def acknowledge_config(
    bus: BusCore,
    config_version: int,
    errors: Sequence[str] = (),
    *,
    restart_required: Sequence[str] = (),
    in_use: Mapping[str, FieldInUse] | None = None,
) -> None:
    """Publish the retained ack of `config_version`: applied, or refused with the reasons.

    `restart_required`: the changed fields this service applies only after a restart
    (`shared.config.fields.restart_required`); they are logged and listed in the ack.
    `in_use`: the fields this instance runs with a value set on its host instead of the
    configured one (`shared.host_settings.in_use`), listed with a refusal too: a host's
    setting is often why (a serial port named there is missing).
    """
    problems = [e[:500] for e in errors][:50]
    restart = [] if problems else [r[:128] for r in restart_required][:200]
    used = dict(sorted(((p[:128], v) for p, v in (in_use or {}).items()), key=_path)[:IN_USE_MAX])
    if problems:
        log.error("configuration %d refused: %s", config_version, "; ".join(problems))
    elif restart:
        log.warning(
            "configuration %d accepted; restart %s to apply: %s",
            config_version,
            bus.service,
            ", ".join(restart),
        )
    bus.publish(
        CONFIG_ACK,
        ConfigAck(
            service=bus.service,
            config_version=config_version,
            accepted=not problems,
            errors=problems,
            restart_required=restart,
            in_use=used,
        ),
        service=bus.service,
    )


def _path(entry: tuple[str, FieldInUse]) -> str:
    return entry[0]
