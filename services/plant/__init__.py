"""The simulated plant: cells, inverter, contactors, DC link and insulation, behind the same
interfaces the master uses for real hardware."""
