"""The plant simulation: devices the BMS talks to."""
