"""Charts for moopt: one function per chart type, each returning a :class:`Chart`.

A :class:`Chart` carries the figure together with its title, a caption saying
how to read it, alt text with the key numbers, and a DataFrame of exactly the
plotted data (saved as the chart's CSV download). The calculation of that data
(``calculate_*_data``) is separate from the drawing, and drawing reads nothing
else. NHS colours are used throughout, and colour never carries meaning alone:
line patterns, marker shapes, direct labels and text repeat it.
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
    Chart,
    chart_style,
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
    "GROUP_COLUMNS",
    "plot_group_comparison",
    "ASSESSMENTS",
    "Chart",
    "DECILE_COLUMNS",
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
    "assign_funnel_position",
    "calculate_funnel_data",
    "calculate_peer_data",
    "calculate_spc_data",
    "calculate_spine_data",
    "calculate_trend_data",
    "chart_style",
    "empty_chart",
    "make_chart_id",
    "plot_funnel",
    "plot_peer_position",
    "plot_practice_spread",
    "plot_spc",
    "plot_spine",
    "plot_trend_with_deciles",
    "rank_points",
    "select_member_practices",
]
