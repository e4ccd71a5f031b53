"""Charts for moopt: one function per chart type, each returning a :class:`Chart`.

A :class:`Chart` is a Vega-Lite specification (built with Altair) with its
title, a caption saying how to read it, alt text with the key numbers, and its
datasets (:class:`ChartData`): exactly the rows drawn, which are also the CSV
downloads. The calculation of those rows (``calculate_*`` and similar) is
separate from the specification, which reads nothing else. Browsers draw the
specification with vega-embed (:mod:`moopt.charts.web`); vl-convert gives
static SVG and PNG copies of the same specification. NHS colours are used
throughout, and colour never carries meaning alone: line patterns, point
shapes, direct labels, tooltips and text repeat it.
"""

from moopt.charts.base import (
    NHS_AQUA_GREEN,
    NHS_BLUE,
    NHS_DARK_BLUE,
    NHS_DARK_GREY,
    NHS_GREEN,
    NHS_MID_GREY,
    NHS_ORANGE,
    NHS_PALE_GREY,
    NHS_PALETTE,
    NHS_PURPLE,
    NHS_RED,
    NHS_WARM_YELLOW,
    NO_DATA_MESSAGE,
    VEGA_CONFIG,
    Chart,
    ChartData,
    empty_chart,
    make_chart_id,
)
from moopt.charts.funnel import (
    LIMIT_COLUMNS,
    assign_funnel_position,
    calculate_funnel_data,
    plot_funnel,
)
from moopt.charts.groups import GROUP_COLUMNS, plot_group_comparison
from moopt.charts.peers import calculate_peer_data, plot_peer_position, rank_points
from moopt.charts.practices import plot_practice_spread, select_member_practices
from moopt.charts.spc import POINT_TYPES, SPC_COLUMNS, calculate_spc_data, plot_spc
from moopt.charts.spine import ASSESSMENTS, SPINE_COLUMNS, calculate_spine_data, plot_spine
from moopt.charts.trend import DECILE_COLUMNS, calculate_trend_data, plot_trend_with_deciles

__all__ = [
    "ASSESSMENTS",
    "Chart",
    "ChartData",
    "DECILE_COLUMNS",
    "GROUP_COLUMNS",
    "LIMIT_COLUMNS",
    "NHS_AQUA_GREEN",
    "NHS_BLUE",
    "NHS_DARK_BLUE",
    "NHS_DARK_GREY",
    "NHS_GREEN",
    "NHS_MID_GREY",
    "NHS_ORANGE",
    "NHS_PALE_GREY",
    "NHS_PALETTE",
    "NHS_PURPLE",
    "NHS_RED",
    "NHS_WARM_YELLOW",
    "NO_DATA_MESSAGE",
    "POINT_TYPES",
    "SPC_COLUMNS",
    "SPINE_COLUMNS",
    "VEGA_CONFIG",
    "assign_funnel_position",
    "calculate_funnel_data",
    "calculate_peer_data",
    "calculate_spc_data",
    "calculate_spine_data",
    "calculate_trend_data",
    "empty_chart",
    "make_chart_id",
    "plot_funnel",
    "plot_group_comparison",
    "plot_peer_position",
    "plot_practice_spread",
    "plot_spc",
    "plot_spine",
    "plot_trend_with_deciles",
    "rank_points",
    "select_member_practices",
]
