"""CAN gateway: inverter protocols (LV 0x35x, Pylontech HV) and a native BMS profile."""
