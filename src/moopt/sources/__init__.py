"""Readers and generators for the published data moopt uses (prescribing, list sizes, organisations)."""
