"""moopt: medicines optimisation dashboards for the English NHS.

The package is one library: data sources and the columnar store, declarative
indicator definitions and the engine that computes them, benchmarking
statistics, charts, the notebook runner and the site builder. Notebooks under
``notebooks/`` only call into it.
"""

__version__ = "0.1.0"
