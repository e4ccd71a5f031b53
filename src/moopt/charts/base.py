"""The chart object, the NHS palette and the shared drawing conventions.

Every chart function in :mod:`moopt.charts` works in two steps:

1. *calculate*: select and shape the rows to show into one tidy DataFrame
   (``Chart.data``), which is exactly what is drawn and what users download;
2. *draw*: build the matplotlib figure from that DataFrame and nothing else.

Figures are created with :class:`matplotlib.figure.Figure` and rendered with
the non-interactive Agg canvas, so they never enter pyplot's registry of open
figures: a build that draws thousands of charts does not accumulate them, and
importing this module does not change the backend of a notebook user.

Text is always drawn literally: :func:`chart_style` turns matplotlib's mathtext
off, so organisation names, titles and labels taken from data can hold "$",
"\\", "_" or "%" safely.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from moopt.atomic import write_csv_atomic
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from moopt.orgs import check_org_level

# --- NHS identity colours (NHS England brand guidelines) -----------------------------------
NHS_BLUE = "#005EB8"
NHS_DARK_BLUE = "#003087"
NHS_DARK_GREY = "#425563"
NHS_MID_GREY = "#768692"
NHS_PALE_GREY = "#E8EDEE"
NHS_WARM_YELLOW = "#FFB81C"
NHS_RED = "#DA291C"  # use sparingly: reserved for "worse" markers
NHS_GREEN = "#009639"
NHS_AQUA_GREEN = "#00A499"
NHS_ORANGE = "#ED8B00"
NHS_PURPLE = "#330072"
NHS_BLACK = "#231F20"
NHS_WHITE = "#FFFFFF"

NHS_PALETTE: dict[str, str] = {
    "nhs_blue": NHS_BLUE,
    "nhs_dark_blue": NHS_DARK_BLUE,
    "nhs_dark_grey": NHS_DARK_GREY,
    "nhs_mid_grey": NHS_MID_GREY,
    "nhs_pale_grey": NHS_PALE_GREY,
    "nhs_warm_yellow": NHS_WARM_YELLOW,
    "nhs_red": NHS_RED,
    "nhs_green": NHS_GREEN,
    "nhs_aqua_green": NHS_AQUA_GREEN,
    "nhs_orange": NHS_ORANGE,
    "nhs_purple": NHS_PURPLE,
    "nhs_black": NHS_BLACK,
}

FIGURE_WIDTH_INCHES = 8.0
FIGURE_HEIGHT_INCHES = 4.5
FIGURE_DPI = 100

NO_DATA_MESSAGE = "No data for this selection"

IMPROVEMENT_DIRECTIONS = ("increase", "decrease", "neutral")

# Arial is the NHS typeface; the others are metric-compatible or close stand-ins.
PREFERRED_FONTS = ("Arial", "Liberation Sans", "Helvetica", "Arimo", "DejaVu Sans")


@lru_cache(maxsize=1)
def chart_font_family() -> str:
    """Return the first installed font of :data:`PREFERRED_FONTS`.

    Naming only an installed font stops matplotlib logging a "font not found"
    warning for every piece of text when Arial is absent (as on most Linux hosts).
    """
    installed = {font.name for font in font_manager.fontManager.ttflist}
    for name in PREFERRED_FONTS:
        if name in installed:
            return name
    return "sans-serif"


def chart_style() -> dict[str, object]:
    """Matplotlib settings for moopt charts: no chart junk, readable text sizes."""
    return {
        "font.family": [chart_font_family()],
        "font.size": 10,
        "axes.titlesize": 12,
        "axes.titleweight": "bold",
        "axes.titlelocation": "left",
        "axes.labelsize": 10,
        "axes.labelcolor": NHS_BLACK,
        "axes.edgecolor": NHS_MID_GREY,
        "axes.linewidth": 0.8,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "axes.grid.axis": "y",
        "grid.color": NHS_PALE_GREY,
        "grid.linewidth": 0.8,
        "xtick.color": NHS_DARK_GREY,
        "ytick.color": NHS_DARK_GREY,
        "xtick.labelsize": 9,
        "ytick.labelsize": 9,
        "legend.frameon": False,
        "legend.fontsize": 9,
        "text.color": NHS_BLACK,
        # Names and titles come from data: a "$" (as in "$x^$"), a backslash or "_" must be drawn
        # as it is, not parsed as mathtext (which fails on unbalanced formulas). Every text
        # artist created or drawn inside styled() reads this; no chart uses mathtext.
        "text.parse_math": False,
        "figure.facecolor": NHS_WHITE,
        "axes.facecolor": NHS_WHITE,
        "savefig.facecolor": NHS_WHITE,
    }


def new_figure(height_inches: float = FIGURE_HEIGHT_INCHES) -> tuple[Figure, Axes]:
    """Create a figure and one axes in the moopt style (call inside :func:`styled`)."""
    # Constrained layout keeps titles, legends and direct labels inside a fixed-size image.
    figure = Figure(
        figsize=(FIGURE_WIDTH_INCHES, height_inches), dpi=FIGURE_DPI, layout="constrained"
    )
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    return figure, axes


def styled():
    """Context manager applying :func:`chart_style` while a figure is built."""
    return matplotlib.rc_context(chart_style())


@dataclass
class Chart:
    """A drawn chart together with the words and the data that go with it.

    Attributes
    ----------
    chart_id : str
        Identifier safe for a file name, e.g. ``"AMR01_trend"``.
    title : str
        Chart title.
    caption : str
        One or two sentences explaining how to read the chart.
    alt_text : str
        Text alternative describing what the chart shows, with its key numbers.
    data : pandas.DataFrame
        Exactly the plotted data, one row per plotted point or line vertex.
    figure : matplotlib.figure.Figure
        The drawing. Released (cleared) by :meth:`close`, which :meth:`to_html`
        calls once the image has been rendered.
    """

    chart_id: str
    title: str
    caption: str
    alt_text: str
    data: pd.DataFrame
    figure: Figure
    _png_bytes: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_chart_id(self.chart_id)
        for name in ("title", "caption", "alt_text"):
            check_text(getattr(self, name), name)
        if not isinstance(self.data, pd.DataFrame):
            raise ValueError("Chart data must be a pandas DataFrame.")
        if not isinstance(self.figure, Figure):
            raise ValueError("Chart figure must be a matplotlib Figure.")

    # --- outputs -------------------------------------------------------------------------
    def to_png_bytes(self) -> bytes:
        """Render the figure to PNG once and keep the bytes for later calls."""
        if self._png_bytes is None:
            if not self.figure.axes:
                raise ValueError(
                    f"The figure of chart {self.chart_id!r} was released before it was rendered."
                )
            buffer = io.BytesIO()
            with styled():
                self.figure.savefig(buffer, format="png", dpi=FIGURE_DPI)
            self._png_bytes = buffer.getvalue()
        return self._png_bytes

    def to_png_base64(self) -> str:
        """Return the PNG image as a base64 ASCII string."""
        return base64.b64encode(self.to_png_bytes()).decode("ascii")

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write :attr:`data` as CSV atomically and return the path written.

        The file is written to a temporary file in the same folder and moved into
        place with :func:`os.replace`, so a reader never sees a half-written file.
        Dates are written as ``YYYY-MM-DD``.
        """
        return write_csv_atomic(self.data, path)

    def to_html(self, csv_href: str | None = None) -> str:
        """Return a ``<figure>`` with the embedded image, title, caption and CSV link.

        All text is HTML-escaped. The figure is released after rendering
        (see :meth:`close`); the rendered image is kept, so calling again is cheap.
        """
        if csv_href is not None:
            check_href(csv_href)
        image = self.to_png_base64()
        self.close()
        width, height = _png_size(self.to_png_bytes())
        parts = [
            f'<figure class="moopt-chart" id="{_escape(self.chart_id)}">',
            f'<img src="data:image/png;base64,{image}" alt="{_escape(self.alt_text)}"'
            f' width="{width}" height="{height}">',
            "<figcaption>",
            f'<span class="moopt-chart-title">{_escape(self.title)}</span>',
            f'<span class="moopt-chart-caption">{_escape(self.caption)}</span>',
        ]
        if csv_href is not None:
            parts.append(
                f'<a class="moopt-chart-csv" href="{_escape(csv_href)}" download>'
                "Download the data (CSV)</a>"
            )
        parts += ["</figcaption>", "</figure>"]
        return "\n".join(parts)

    def close(self) -> None:
        """Release the figure's drawing objects (the rendered PNG, if any, is kept)."""
        if self._png_bytes is None and self.figure.axes:
            self.to_png_bytes()
        self.figure.clear()

    def _repr_html_(self) -> str:  # shown by Jupyter
        return self.to_html(None)


# --- validation and text helpers ----------------------------------------------------------
_CHART_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,119}$")


def check_chart_id(chart_id: str) -> str:
    """Return ``chart_id`` if it is safe for a file name, else raise ValueError."""
    if not isinstance(chart_id, str) or not _CHART_ID.match(chart_id) or ".." in chart_id:
        raise ValueError(
            f"Chart id {chart_id!r} is not safe for a file name: use letters, digits, "
            "'_', '-' and '.', starting with a letter or digit (at most 120 characters)."
        )
    return chart_id


def make_chart_id(*parts: object) -> str:
    """Join ``parts`` with '_' and replace anything unsafe for a file name with '_'.

    Examples
    --------
    >>> make_chart_id("AMR01", "trend")
    'AMR01_trend'
    >>> make_chart_id(None, "spine / ICB")
    'spine_ICB'
    """
    text = "_".join(str(part) for part in parts if part is not None and str(part) != "")
    text = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-")
    text = text.replace("..", "_")
    return check_chart_id(text[:120] or "chart")


def check_text(value: object, name: str) -> str:
    """Return ``value`` if it is a non-empty string, else raise ValueError."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"The {name} must be a non-empty piece of text.")
    return value


def check_href(href: str) -> str:
    """Reject link targets that would run script when clicked."""
    if not isinstance(href, str) or not href.strip():
        raise ValueError("The CSV link must be a non-empty relative or http(s) address.")
    scheme = re.match(r"^\s*([A-Za-z][A-Za-z0-9+.-]*):", href)
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        raise ValueError(
            f"The CSV link {href!r} uses the {scheme.group(1)!r} scheme; "
            "use a relative path or an http(s) address."
        )
    return href


def check_direction(improvement_direction: str | None, allow_none: bool = False) -> str | None:
    """Return a valid improvement direction, else raise ValueError."""
    if improvement_direction is None and allow_none:
        return None
    if improvement_direction not in IMPROVEMENT_DIRECTIONS:
        raise ValueError(
            f"Unknown improvement direction {improvement_direction!r}. "
            f"Use one of: {', '.join(IMPROVEMENT_DIRECTIONS)}."
        )
    return improvement_direction


def check_period_type(period_type: str) -> str:
    """Return ``period_type`` if it is "month", "quarter" or "rolling_12m", else raise ValueError."""
    if period_type not in ("month", "quarter", "rolling_12m"):
        raise ValueError(
            f"Unknown period type {period_type!r}. Use 'month', 'quarter' or 'rolling_12m'."
        )
    return period_type


def check_level(org_level: str) -> str:
    """Return ``org_level`` if known (see :data:`moopt.orgs.ORG_LEVELS`), else raise."""
    return check_org_level(org_level)


def require_columns(table: object, required: tuple[str, ...] | list[str], name: str) -> None:
    """Raise ValueError naming every column of ``required`` that ``table`` lacks."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"The {name} must be a pandas DataFrame, not {type(table).__name__}.")
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ValueError(
            f"The {name} is missing the column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, table.columns)) or 'no columns'}."
        )


def to_timestamp(period: object, name: str = "period") -> pd.Timestamp:
    """Convert ``period`` to a Timestamp or raise ValueError."""
    try:
        stamp = pd.Timestamp(period)
    except (TypeError, ValueError) as error:
        raise ValueError(f"The {name} {period!r} is not a date.") from error
    if pd.isna(stamp):
        raise ValueError(f"The {name} must be a date, not missing.")
    return stamp


def single_value(series: pd.Series, what: str) -> object:
    """Return the single distinct non-missing value of ``series`` (NaN when none)."""
    distinct = series.dropna().unique()
    if len(distinct) > 1:
        raise ValueError(
            f"Expected one {what} but found {len(distinct)} "
            f"({', '.join(map(str, distinct[:5]))}); filter the table first."
        )
    return distinct[0] if len(distinct) else np.nan


_LEVEL_WORDS: dict[str, tuple[str, str]] = {
    "practice": ("GP practice", "GP practices"),
    "pcn": ("primary care network", "primary care networks"),
    "sub_icb": ("sub-ICB location", "sub-ICB locations"),
    "icb": ("integrated care board", "integrated care boards"),
    "region": ("NHS England region", "NHS England regions"),
    "england": ("England", "England"),
}


def level_name(org_level: str, plural: bool = False) -> str:
    """Words for an organisation level in running text, e.g. "sub-ICB locations"."""
    singular, many = _LEVEL_WORDS[check_org_level(org_level)]
    return many if plural else singular


def format_period(period: object, period_type: str | None = None) -> str:
    """Format a period for people, e.g. "Mar 2024" or "12 months to Mar 2024"."""
    stamp = pd.Timestamp(period)
    text = stamp.strftime("%b %Y")
    return {"rolling_12m": f"12 months to {text}", "quarter": f"quarter to {text}"}.get(period_type, text)


def format_number(value: float) -> str:
    """Format a number with about three significant figures and thousands separators."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return "no value"
    value = float(value)
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:,.1f}"
    if magnitude >= 1:
        return f"{value:,.2f}"
    if magnitude == 0:
        return "0"
    decimals = min(6, 2 - int(math.floor(math.log10(magnitude))))
    return f"{value:.{decimals}f}"


def format_value(value: float, unit: str) -> str:
    """Format a value with its unit: "12.3%" or "0.871 items per STAR-PU".

    Examples
    --------
    >>> format_value(12.345, "%")
    '12.3%'
    >>> format_value(0.87149, "items per STAR-PU")
    '0.871 items per STAR-PU'
    >>> format_value(1234.6, "pounds per 1,000 patients")
    '1,235 pounds per 1,000 patients'
    """
    number = format_number(value)
    if number == "no value":
        return number
    if unit.strip() in ("%", "per cent", "percent"):
        return f"{number}%"
    return f"{number} {unit}"


def unit_axis_label(unit: str) -> str:
    """Axis label for a value unit: "%" becomes "Per cent (%)"."""
    if unit.strip() in ("%", "per cent", "percent"):
        return "Per cent (%)"
    return unit[:1].upper() + unit[1:]


def direction_sentence(improvement_direction: str | None) -> str:
    """One sentence saying which way is generally better, in non-judgemental words."""
    if improvement_direction == "decrease":
        return "Lower values are generally better for this indicator."
    if improvement_direction == "increase":
        return "Higher values are generally better for this indicator."
    if improvement_direction == "neutral":
        return "Neither higher nor lower values are better in themselves for this indicator."
    return ""


def count_words(count: int, singular: str, plural: str | None = None) -> str:
    """ "1 practice", "3 practices": a count with its noun in the right number."""
    noun = singular if count == 1 else (plural or singular + "s")
    return f"{count:,} {noun}"


def ordinal(number: int) -> str:
    """An ordinal number in words.

    Examples
    --------
    >>> [ordinal(n) for n in (1, 22, 13, 90)]
    ['1st', '22nd', '13th', '90th']
    """
    if 10 <= number % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def shorten(text: str, limit: int = 28) -> str:
    """Shorten a label for drawing, with an ellipsis when cut."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def set_title(figure: Figure, title: str) -> None:
    """Write the title at the top left of the figure, wrapped onto two lines if long."""
    figure.suptitle(
        textwrap.fill(shorten(title, 150), 80),
        x=0.01,
        ha="left",
        fontsize=12,
        fontweight="bold",
        color=NHS_BLACK,
    )


def finish_axes(axes: Axes, title: str, x_label: str, y_label: str) -> None:
    """Set the title and axis labels."""
    set_title(axes.figure, title)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)


def add_legend(figure: Figure, handles: list, columns: int = 4) -> None:
    """A frameless legend below the plot, outside it, so it never covers data."""
    if handles:
        figure.legend(
            handles=handles,
            loc="outside lower center",
            ncol=max(1, min(columns, len(handles))),
            handlelength=3,
            frameon=False,
        )


def empty_chart(chart_id: str, title: str, reason: str, data: pd.DataFrame) -> Chart:
    """A chart saying there is nothing to show, carrying the (empty) data frame ``data``.

    Used for legitimately empty selections (for example an organisation with no
    member practices in the period), so callers never have to special-case them.
    """
    with styled():
        figure, axes = new_figure()
        axes.set_axis_off()
        axes.text(
            0.5,
            0.55,
            NO_DATA_MESSAGE,
            ha="center",
            va="center",
            fontsize=14,
            color=NHS_DARK_GREY,
            transform=axes.transAxes,
        )
        axes.text(
            0.5,
            0.42,
            shorten(reason[:1].upper() + reason[1:], 110),
            ha="center",
            va="center",
            fontsize=10,
            color=NHS_DARK_GREY,
            transform=axes.transAxes,
        )
        set_title(figure, title)
    sentence = reason.rstrip(".") + "."
    return Chart(
        chart_id=chart_id,
        title=title,
        caption=f"{NO_DATA_MESSAGE}: {sentence}",
        alt_text=f"{NO_DATA_MESSAGE}. {sentence[:1].upper()}{sentence[1:]}",
        data=data.iloc[0:0].copy(),
        figure=figure,
    )


def _escape(text: str) -> str:
    return html.escape(str(text), quote=True)


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height in pixels from a PNG header (IHDR chunk)."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
