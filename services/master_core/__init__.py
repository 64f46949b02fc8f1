"""Master core: pack state, protection, contactors, SOC/SOH, limits, balancing strategy, events."""
