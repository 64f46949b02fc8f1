"""Slave module agent: cell measurement and balancing, on simulated cells or a Modbus board."""
