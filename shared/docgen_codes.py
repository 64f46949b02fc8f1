"""Markdown of the protection code table, the event catalogue and the configuration field
table, for `shared.docgen`."""

from __future__ import annotations

from shared.config.fields import (
    FIELD_USES,
    site_field_description,
    site_leaf_paths,
    site_use_of,
)
from shared.event_codes import EVENT_CODES
from shared.fault_matrix import MatrixResults, matrix_markdown
from shared.protection_codes import (
    CODE_TABLE,
    EVT1_OTHER_ALARM,
    EVT1_OTHER_WARNING,
    OTHER_CODE_BIT,
    PYLON_0X359_OTHER_FAULT,
    PYLON_HV_OTHER_FAULT,
    VICTRON_0X35A_GENERAL,
    CodeSpec,
    Level,
)

_HEADER = "Generated from `{src}` by `python -m shared.docgen`; do not edit by hand."


def _flows(spec: CodeSpec) -> str:
    return " and ".join(sorted(spec.concerns))


def _action(spec: CodeSpec, level: Level) -> str:
    if level != "fault" and not spec.concerns:
        return "flag only"
    if level == "warning":
        return f"derate {_flows(spec)}"
    if level == "alarm":
        return f"stop {_flows(spec)} (limit 0 A)"
    return "open the contactors; stop charge and discharge"


def _clears(spec: CodeSpec, level: Level) -> str:
    if level != "fault":
        return "by itself, past its release"
    if spec.reset == "service":
        return "latched: service reset (`reset_faults` with `service_override`)"
    return "latched: operator reset (`reset_faults`), past its release"


def _evt1(spec: CodeSpec, level: Level) -> int:
    if spec.evt1 is None:
        return EVT1_OTHER_WARNING if level == "warning" else EVT1_OTHER_ALARM
    return spec.evt1[1 if level == "warning" else 0]


def _can(spec: CodeSpec, level: Level) -> str:
    fault = level == "fault"
    victron = f"{'Alarm' if fault else 'Warn'}{spec.victron_0x35a or VICTRON_0X35A_GENERAL}"
    if spec.pylon_0x359 is not None:
        pylon = spec.pylon_0x359[0 if fault else 1]
    else:
        pylon = PYLON_0X359_OTHER_FAULT if fault else "-"
    if spec.pylon_hv_flag is not None:
        hv = f"{'Protect' if fault else 'Alarm'}{spec.pylon_hv_flag}"
    elif spec.pylon_hv_error is not None:
        hv = spec.pylon_hv_error if fault else "-"
    else:
        hv = PYLON_HV_OTHER_FAULT if fault else "-"
    return f"{victron} | {pylon} | {hv}"


def fault_matrix_markdown(results: MatrixResults | None = None) -> str:
    """The code table, then the measured matrix (`results`: the committed bench results)."""
    lines = [
        "# Fault matrix",
        "",
        _HEADER.format(src="shared/protection_codes.py` and `docs/data/fault-matrix.json"),
        "",
        "One row per protection code and level: what the BMS does, what clears it, and where it",
        "shows in each protocol. The native bit is the bit in the 32-bit fault, alarm and warning",
        f"fields (Modbus native block, SunSpec `EvtVnd1`/`EvtVnd2`, CAN 0x604/0x605); bit "
        f"{OTHER_CODE_BIT} is any code the reader does not know. `Evt1` is the SunSpec 802/804 "
        "bit. A quantity whose value is unknown is not evaluated and stops the directions it "
        "concerns (its code is listed as unknown, not raised). `insulation_low` and "
        "`insulation_monitor_failure` are supervised only where an insulation monitor exists "
        "(the simulated plant has one). The plausibility codes (from `current_on_open_string` "
        "on) are not evaluated while their check does not apply (e.g. the open-string check "
        "while the contactors are closed): then they hold their state and stop nothing.",
        "",
        "| Code | Level | Action | Clears | Native bit | Evt1 bit | Victron 0x35A | "
        "Pylontech 0x359 | Pylontech HV 0x4250 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for spec in CODE_TABLE:
        for level in spec.levels:
            lines.append(
                f"| `{spec.code.value}` | {level} | {_action(spec, level)} | "
                f"{_clears(spec, level)} | {spec.bit} | {_evt1(spec, level)} | "
                f"{_can(spec, level)} |"
            )
    lines += ["", "## Codes", ""]
    lines += [f"- `{spec.code.value}` ({spec.title}): {spec.description}" for spec in CODE_TABLE]
    lines += ["", matrix_markdown(results)]
    return "\n".join(lines).rstrip() + "\n"


def event_codes_markdown() -> str:
    lines = [
        "# Event codes",
        "",
        _HEADER.format(src="shared/event_codes.py"),
        "",
        "Every `code` an `Event` on `bms/v1/{system}/events/{source}` may carry. Protection "
        "codes are raised and cleared per level (see [fault-matrix.md](fault-matrix.md)).",
        "",
        "| Code | Source | Kind | Level | Meaning |",
        "|---|---|---|---|---|",
    ]
    for e in EVENT_CODES:
        lines.append(
            f"| `{e.code}` | {e.source} | {', '.join(e.kinds)} | {', '.join(e.levels)} | "
            f"{e.description} |"
        )
    return "\n".join(lines) + "\n"


def config_fields_markdown() -> str:
    lines = [
        "# Configuration fields",
        "",
        _HEADER.format(src="shared/config/fields.py"),
        "",
        "Who reads each field of the system configuration, and how a change takes effect: "
        "*live* as soon as the service accepts the configuration, *restart* only after that "
        "service restarts (its acknowledgement lists the field under `restart_required`). "
        "`validation` means the field only bounds other fields. A `*` matches one path segment.",
        "",
        "| Field | Read by | Note |",
        "|---|---|---|",
    ]
    for use in FIELD_USES:
        services: dict[str, str] = {}
        for r in use.readers:
            if services.get(r.service) != "restart":
                services[r.service] = r.apply
        readers = ", ".join(f"{s} ({a})" for s, a in services.items()) or "**nothing**"
        lines.append(f"| `{use.pattern}` | {readers} | {use.note} |")
    lines += [
        "",
        "## Site configuration",
        "",
        "The site configuration (`shared/config/site.py`, `SiteConfig`): up to 16 strings in "
        "parallel on one DC bus, published retained on `bms/v1/{site}/site/config` by the web "
        "application that keeps it (BMS_UI_SITE_CONFIG). The description is the field's own "
        "docstring; `*` is each string.",
        "",
        "| Field | Default | Read by | Description | Note |",
        "|---|---|---|---|---|",
    ]
    for path in site_leaf_paths():
        use = site_use_of(path)
        readers = ", ".join(f"{r.service} ({r.apply})" for r in use.readers) or "**nothing**"
        text, default = site_field_description(path)
        text = text.replace("|", "\\|")
        shown = f"`{default}`" if default else "required"
        lines.append(f"| `{path}` | {shown} | {readers} | {text} | {use.note} |")
    return "\n".join(lines) + "\n"
