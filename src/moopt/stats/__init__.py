"""Benchmarking statistics for moopt: DataFrame in, DataFrame out.

Every function takes a pandas DataFrame plus column names, checks its input
(raising ``ValueError`` with a message naming the problem), and returns a new
DataFrame; nothing here draws. The calculations are vectorised with NumPy
and SciPy; only the per-series model fits (STL, GLM) loop over series.

Modules
-------
intervals
    Wilson (proportions) and exact/Byar Poisson (counts, rates, ratios)
    confidence limits, and :func:`calculate_intervals` choosing by kind.
compare
    Higher / similar / lower than a benchmark, and better / worse by the
    indicator's improvement direction.
funnels
    Funnel limits with Spiegelhalter's overdispersion adjustment, per
    organisation and as lines for drawing.
peers
    Similar-organisation groups (standardised Euclidean nearest neighbours)
    and peer benchmarks.
spc
    NHS "Making Data Count" XmR charts for many series at once.
trends
    STL seasonal adjustment, GLM change per year, Fingertips recent trend.
savings
    Cost-saving opportunity at a target percentile.

Percentiles, national deciles, quartiles and 12-month rolling values are
not here: the indicator engine computes them, in one place
(:mod:`moopt.indicators.engine`).

Column names for confidence levels use the level in per cent with "_" for
the decimal point: ``lower_95``, ``upper_99_8``, ``england_comparison_95``,
``funnel_flag_99_8``.
"""

from moopt.stats._validate import (
    DEFAULT_CONFIDENCE,
    DEFAULT_GROUP_COLUMNS,
    IMPROVEMENT_DIRECTIONS,
    INDICATOR_KINDS,
    confidence_label,
)
from moopt.stats.compare import assessment_column, calculate_comparison, comparison_column
from moopt.stats.funnels import (
    calculate_funnel_limits,
    calculate_funnel_lines,
    calculate_funnel_parameters,
    poisson_exact_control_limits,
    poisson_interpolated_quantile,
)
from moopt.stats.intervals import (
    calculate_intervals,
    calculate_rate_interval,
    calculate_ratio_interval,
    calculate_wilson_interval,
    lower_column,
    poisson_count_limits,
    upper_column,
    wilson_limits,
)
from moopt.stats.peers import assign_peer_groups, calculate_peer_benchmark
from moopt.stats.savings import calculate_cost_savings
from moopt.stats.spc import calculate_spc, calculate_spc_summary
from moopt.stats.trends import (
    calculate_recent_trend,
    calculate_seasonal_adjustment,
    calculate_trend_model,
)

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_GROUP_COLUMNS",
    "IMPROVEMENT_DIRECTIONS",
    "INDICATOR_KINDS",
    "assessment_column",
    "assign_peer_groups",
    "calculate_comparison",
    "calculate_cost_savings",
    "calculate_funnel_limits",
    "calculate_funnel_lines",
    "calculate_funnel_parameters",
    "calculate_intervals",
    "calculate_peer_benchmark",
    "calculate_rate_interval",
    "calculate_ratio_interval",
    "calculate_recent_trend",
    "calculate_seasonal_adjustment",
    "calculate_spc",
    "calculate_spc_summary",
    "calculate_trend_model",
    "calculate_wilson_interval",
    "comparison_column",
    "confidence_label",
    "lower_column",
    "poisson_count_limits",
    "poisson_exact_control_limits",
    "poisson_interpolated_quantile",
    "upper_column",
    "wilson_limits",
]
