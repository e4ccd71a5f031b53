"""Charts for moopt: one function per chart type, each returning a :class:`Chart`.
"""
from moopt.charts.base import Chart, ChartData, empty_chart, make_chart_id  # noqa: F401
