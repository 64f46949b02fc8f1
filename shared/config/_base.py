"""Common base model and message formatting for the configuration models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """Immutable, and strict about unknown keys: a typo in a config file must be an error."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True
    )


def fmt(value: float, unit: str) -> str:
    """A value with its unit, as an integrator would write it (4.30 V, 45.0 °C, 100 mA)."""
    if unit == "V":
        if abs(value) >= 100.0:
            return f"{value:.1f} V"
        text = f"{value:.3f}"
        return f"{text[:-1] if text.endswith('0') else text} V"
    if unit in ("A", "degC", "Ah"):
        return f"{value:.1f} {'°C' if unit == 'degC' else unit}"
    if unit in ("mA", "ohm"):
        return f"{value:.0f} {'Ω' if unit == 'ohm' else unit}"
    return f"{value:g} {unit}"


def raise_problems(problems: list[str]) -> None:
    """Raise one ValueError listing every problem, one per line (see `explain_errors`)."""
    if problems:
        raise ValueError("\n".join(problems))
