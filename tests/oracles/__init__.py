"""Independent implementations that check the indicator engine's numbers (not part of moopt)."""
