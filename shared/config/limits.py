"""Hardware limits of the product: no configuration may exceed them."""

from __future__ import annotations

from typing import Final

CELL_VOLTAGE_MIN_V: Final = 1.00
CELL_VOLTAGE_MAX_V: Final = 4.95
"""Measurement range of a cell-voltage channel."""

CELL_VOLTAGE_ACCURACY_V: Final = 0.050
"""Specified cell-voltage accuracy (±); sets the tolerance of plausibility checks."""

PACK_VOLTAGE_MAX_V: Final = 980.0

PACK_VOLTAGE_ACCURACY_V: Final = 1.0
"""Specified pack-voltage accuracy (±) of the master's measurement."""

CURRENT_MIN_A: Final = -200.0
CURRENT_MAX_A: Final = 200.0
"""Pack-current measurement range; positive = charge."""

CURRENT_ACCURACY_A: Final = 0.1
"""Specified pack-current accuracy (±) around zero; sets the noise bound of current checks."""

BALANCING_CURRENT_MAX_MA: Final = 500.0
"""Exclusive: the balancing current must stay strictly below this value."""

CELLS_IN_SERIES_MAX: Final = 196

MODULES_MAX: Final = CELLS_IN_SERIES_MAX
"""Slave modules of one system: each holds at least one of the cells in series."""
CELLS_PER_MODULE_MAX: Final = CELLS_IN_SERIES_MAX
"""Cell channels of one slave module: a single module may carry the whole string."""
TEMP_SENSORS_PER_MODULE_MAX: Final = 64
"""Temperature channels of one slave module."""

OCV_TABLE_POINTS_MAX: Final = 101
"""Points of an OCV(SOC) table: one per percent of SOC at most. The shipped tables have 21 and
22 points; a finer table adds nothing at the ±50 mV cell-voltage accuracy."""
OCV_TEMPERATURES_MAX: Final = 8
"""Temperatures an OCV table with branches may give (one block of points each): published cell
data gives 3-6 (e.g. -10, 0, 10, 25, 45 degC), and OCV changes by about 0.1-0.5 mV/K."""
OCV_HYSTERESIS_MAX_V: Final = 0.2
"""Largest gap between the charge and the discharge OCV branch at one SOC. Rested hysteresis is
10-20 mV on LFP and under 10 mV on NMC (Plett, Battery Management Systems Vol. 1, 2015, ch. 2;
Dreyer et al., Nature Materials 9, 448-453, 2010, for LFP); a larger gap is a curve taken under
load."""

CELL_TEMPERATURE_MIN_C: Final = -40.0
CELL_TEMPERATURE_MAX_C: Final = 125.0
"""Measurement range of a cell-temperature sensor."""

INSULATION_MIN_OHM_PER_V: Final = 100.0
"""Minimum DC isolation resistance per volt of the bus (UNECE R100 / ISO 6469-3)."""

SITE_STRINGS_MAX: Final = 16
"""Strings (systems) of one site in parallel on one DC bus (issue 17)."""
