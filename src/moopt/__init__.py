"""moopt: medicines optimisation dashboards for the English NHS.

The package is one library: data sources and the columnar store, declarative
indicator definitions and the engine that computes them, benchmarking
statistics, charts, the notebook runner and the site builder. Notebooks under
``notebooks/`` only call into it.

From Python, ``moopt.build(params, **options)`` runs what ``moopt build`` runs and
``moopt.indicators.calculate(...)`` returns indicator values as a DataFrame (see
``docs/python-api.md``).
"""

__version__ = "0.1.0"

__all__ = ["build", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so that `import moopt` (and the command line's start) stays quick.
    if name == "build":
        from moopt.api import build

        return build
    raise AttributeError(f"module 'moopt' has no attribute {name!r}")
