"""Indicator definitions (one YAML file per indicator) and the engine that computes them all."""

from moopt.indicators.definitions import (
    Indicator,
    Theme,
    load_indicators,
    load_themes,
    indicators_for_theme,
)

__all__ = ["Indicator", "Theme", "load_indicators", "load_themes", "indicators_for_theme"]
