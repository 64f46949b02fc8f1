"""Simulated devices that speak the wire protocols of the real ones (CAN, Modbus)."""
