"""The BMS services, each run as `python -m services.<name>`; `python -m services` runs all."""
