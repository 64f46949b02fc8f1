"""Simulated devices of the plant."""
