"""The wizard's pages, in order, and the configuration sections each one edits."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config.limits import CELLS_IN_SERIES_MAX


@dataclass(frozen=True)
class WizardStep:
    """One page of the wizard and the configuration sections it edits."""

    key: str
    title: str
    sections: tuple[str, ...]
    """Dotted path prefixes owned by this step."""
    help: str


STEPS: tuple[WizardStep, ...] = (
    WizardStep(
        "chemistry",
        "Chemistry preset",
        ("chemistry", "name"),
        "Choose the cell chemistry: every threshold is pre-filled from its preset. Changing it "
        "later derives protection, balancing and the CAN profile again and clears the overrides; "
        "each setting it changes is listed, and can keep its old value.",
    ),
    WizardStep(
        "cells",
        "Cell data",
        ("cell_capacity_ah", "cell_resistance_mohm", "chemistry_overrides", "full_charge"),
        "Enter capacity and resistance from the cell datasheet, and override preset values only "
        "where the datasheet differs (empty = preset value). The cell's limits here bound the "
        "warning, alarm and fault levels, which are set on the Protection step only. A new "
        "capacity or limit derives those levels again, except where you set a value yourself; "
        "each change is listed. The full-charge interval asks the inverter for a full charge "
        "when the SOC has gone that long without one (LFP's flat voltage gives no correction at "
        "rest); empty = never.",
    ),
    WizardStep(
        "topology",
        "Topology",
        ("topology",),
        f"Modules, cells per module and temperature sensors of the string (at most "
        f"{CELLS_IN_SERIES_MAX} cells in series). A new cell count derives the pack thresholds "
        f"again, except the ones you set; each change is listed.",
    ),
    WizardStep(
        "protection",
        "Protection thresholds",
        ("protection",),
        "Each quantity has three levels: a warning derates, an alarm stops charge or discharge, "
        "a fault opens the contactors; each level clears at its release. The values are "
        "pre-filled from the chemistry preset and the cell's limits (Cell data step); the "
        "values you set here stay when the capacity or size changes.",
    ),
    WizardStep(
        "balancing",
        "Balancing",
        ("balancing",),
        "When and how hard cells are balanced; a cell is bled only above the minimum voltage and "
        "below the maximum temperature. Passive balancing: the bleed resistor sets the current "
        "(nominal cell voltage / resistance); a new resistor sets it again.",
    ),
    WizardStep(
        "contactors",
        "Contactors and precharge",
        ("contactors", "comm_loss"),
        "Precharge circuit and contactor feedback, and what to do when module telemetry is lost.",
    ),
    WizardStep(
        "current_sensor",
        "Current sensor and insulation monitor",
        ("current_sensor", "insulation_monitor"),
        "Range and calibration of the pack current sensor (current = gain x raw + offset), and "
        "the CAN bus each of these devices sits on.",
    ),
    WizardStep(
        "interfaces",
        "Interfaces",
        ("interfaces", "timing"),
        "Modbus RTU and TCP for SCADA, the CAN profile for the inverter, and the cell sampling "
        "periods.",
    ),
    WizardStep(
        "review",
        "Review and apply",
        (),
        "Check the changes against the running configuration, then apply them.",
    ),
)

_STEP_INDEX = {s.key: i for i, s in enumerate(STEPS)}


def step(key: str) -> WizardStep:
    """The step called `key`; KeyError if there is none."""
    return STEPS[_STEP_INDEX[key]]


def next_step(key: str) -> str | None:
    i = _STEP_INDEX[key] + 1
    return STEPS[i].key if i < len(STEPS) else None


def prev_step(key: str) -> str | None:
    i = _STEP_INDEX[key] - 1
    return STEPS[i].key if i >= 0 else None


def in_sections(path: str, sections: tuple[str, ...]) -> bool:
    return any(path == s or path.startswith(s + ".") for s in sections)


def step_of_path(path: str) -> str | None:
    """The step whose sections contain `path`, or None (e.g. system_id or "")."""
    for s in STEPS:
        if in_sections(path, s.sections):
            return s.key
    return None
