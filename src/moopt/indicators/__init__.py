"""Indicator definitions (one YAML file per indicator) and the engine that computes them all."""

from moopt.indicators.definitions import (
    Indicator,
    Theme,
    load_indicators,
    load_themes,
    indicators_for_theme,
)

__all__ = ["Indicator", "Theme", "calculate", "load_indicators", "load_themes", "indicators_for_theme"]


def __getattr__(name: str):
    # moopt.indicators.calculate lives in moopt.api (it reads stores and runs the engine);
    # it is imported on first use.
    if name == "calculate":
        from moopt.api import calculate

        return calculate
    raise AttributeError(f"module 'moopt.indicators' has no attribute {name!r}")
