"""Compare groups within an organisation and England: values with confidence intervals.

Used for the transfer-of-care comparison (30-day readmission for referred
patients whose community pharmacy follow-up was completed, or not), but
written for any breakdown of a proportion.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.lines import Line2D

from moopt.charts.base import (
    NHS_BLUE,
    NHS_DARK_GREY,
    Chart,
    add_legend,
    empty_chart,
    finish_axes,
    new_figure,
    require_columns,
    styled,
)

GROUP_COLUMNS = ("area", "group", "value", "lower_95", "upper_95", "numerator", "denominator")
AREA_STYLE = {0: {"marker": "o", "color": NHS_BLUE}, 1: {"marker": "s", "color": NHS_DARK_GREY}}


def plot_group_comparison(table: pd.DataFrame, *, title: str, unit: str, group_label: str,
                          chart_id: str) -> Chart:
    """Dots with 95% intervals for each group, one marker shape per area (organisation, England).

    Parameters
    ----------
    table : pandas.DataFrame
        One row per area and group with :data:`GROUP_COLUMNS`; areas are drawn in
        the order they first appear.
    title, unit, group_label, chart_id : str
        Chart title, value unit (axis label), what the groups are, and the chart id.
    """
    require_columns(table, GROUP_COLUMNS, "group comparison table")
    data = table.loc[:, list(GROUP_COLUMNS)].reset_index(drop=True)
    if data["value"].notna().sum() == 0:
        return empty_chart(chart_id, title, "no group has a value in this period", data)
    areas = list(dict.fromkeys(data["area"]))
    groups = list(dict.fromkeys(data["group"]))
    with styled():
        figure, axes = new_figure()
        handles = []
        for i, area in enumerate(areas):
            style = AREA_STYLE[min(i, 1)]
            rows = data[data["area"] == area]
            x = [groups.index(g) + (i - (len(areas) - 1) / 2) * 0.18 for g in rows["group"]]
            axes.errorbar(x, rows["value"], yerr=[rows["value"] - rows["lower_95"], rows["upper_95"] - rows["value"]],
                          fmt=style["marker"], color=style["color"], ecolor=style["color"], capsize=4,
                          markersize=8, linewidth=1.5)
            for xi, v in zip(x, rows["value"]):
                if pd.notna(v):
                    axes.annotate(f"{v:.1f}", (xi, v), xytext=(8, 0), textcoords="offset points",
                                  va="center", fontsize=9, color=style["color"])
            handles.append(Line2D([], [], marker=style["marker"], color=style["color"], linestyle="none",
                                  label=f"{area} (95% interval)"))
        axes.set_xticks(range(len(groups)), [g.replace("_", " ") for g in groups])
        axes.set_xlim(-0.6, len(groups) - 0.4)
        axes.set_ylim(bottom=0)
        finish_axes(axes, title, group_label, unit)
        add_legend(figure, handles, columns=2)
    parts = []
    for area in areas:
        rows = data[data["area"] == area]
        parts.append(f"{area}: " + ", ".join(
            f"{g.replace('_', ' ')} {v:.1f} (95% interval {lo:.1f} to {hi:.1f}, {int(n):,} of {int(d):,})"
            for g, v, lo, hi, n, d in zip(rows["group"], rows["value"], rows["lower_95"], rows["upper_95"],
                                          rows["numerator"], rows["denominator"]) if pd.notna(v)))
    caption = ("Each marker is a group's value with its 95% confidence interval (Wilson); circles are the "
               "organisation, squares England. Intervals that do not overlap suggest a real difference, but "
               "the groups may differ in other ways than the one compared.")
    return Chart(chart_id=chart_id, title=title, caption=caption,
                 alt_text=f"{title}. " + "; ".join(parts) + ".", data=data, figure=figure)
