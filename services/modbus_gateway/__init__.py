"""Modbus gateway: SunSpec-compliant RTU and TCP server for SCADA and inverters."""
