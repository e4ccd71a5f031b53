"""The chart object, the NHS palette and the shared conventions of every moopt chart.

Every chart function in :mod:`moopt.charts` works in two steps:

1. *calculate*: select and shape the rows to show into tidy DataFrames, one per
   :class:`ChartData`; these are exactly what is drawn and exactly what readers
   download;
2. *specify*: describe the drawing as a Vega-Lite specification (built with
   Altair) that reads those datasets by name and nothing else.

The specification is drawn in the reader's browser by vega-embed, which the
site ships itself (:mod:`moopt.charts.web`), so charts can be hovered and
resize with the page; the same specification gives a static SVG or PNG through
vl-convert (:meth:`Chart.to_svg`, :meth:`Chart.to_png`) for pages that must
work without JavaScript and for print.

Specifications are templates: whatever differs between organisations (the
organisation's code, its name) is a top-level Vega-Lite parameter filled in by
:attr:`Chart.params`, so a builder can cache one specification per indicator,
level and period and reuse it for every organisation's page. Datasets that are
the same on every organisation's page (all organisations' values, national
deciles, funnel limits) carry a :attr:`ChartData.shared_key`; a site stores
them once and pages load them by script, which also works from ``file://``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import html
import json
import math
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from moopt.atomic import write_csv_atomic
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

NO_DATA_MESSAGE = "No data for this selection"

IMPROVEMENT_DIRECTIONS = ("increase", "decrease", "neutral")

# Arial is the NHS typeface; the others are metric-compatible or close stand-ins.
FONT_STACK = "Arial, 'Liberation Sans', Helvetica, Arimo, sans-serif"

# Plot heights in pixels; widths follow the page column ("container").
CHART_HEIGHT = 300
STATIC_WIDTH = 720  # static copies have no container to fill

# Significant figures kept in every chart dataset (CSV and JSON alike, so the two agree).
SIGNIFICANT_FIGURES = 6

# One look for every chart, applied by the page script (moopt.charts.web) and by the static
# renderer, so it is not repeated in each page's specifications. Text is at least 12 px.
VEGA_CONFIG: dict = {
    "font": FONT_STACK,
    "background": NHS_WHITE,
    "padding": 8,
    "autosize": {"type": "fit-x", "contains": "padding", "resize": True},
    "view": {"stroke": None, "continuousHeight": CHART_HEIGHT},
    "axis": {
        "labelFontSize": 12,
        "titleFontSize": 13,
        "titleFontWeight": "normal",
        "labelColor": NHS_DARK_GREY,
        "titleColor": NHS_BLACK,
        "domainColor": NHS_MID_GREY,
        "tickColor": NHS_MID_GREY,
        "gridColor": NHS_PALE_GREY,
        "labelLimit": 240,
        "labelOverlap": True,
    },
    # Titles never run past the plot: at 360 px a long axis title is cut to the plot's size
    # (with an ellipsis; the caption and tooltips carry the full words) instead of overflowing.
    "axisX": {"grid": False, "labelAngle": 0, "titleLimit": {"expr": "max(width, 120)"}},
    "axisY": {"titleLimit": {"expr": "max(height, 120)"}},
    "legend": {
        "orient": "bottom",
        "direction": "horizontal",
        "columns": {"expr": "width < 420 ? 1 : 2"},  # one column on a phone
        "labelFontSize": 12,
        "titleFontSize": 12,
        "labelLimit": 320,
        "symbolStrokeWidth": 2,
        "symbolSize": 120,
    },
    "text": {"fontSize": 12, "font": FONT_STACK},
    "title": {"fontSize": 14, "anchor": "start", "font": FONT_STACK},
    "line": {"strokeWidth": 2},
    "point": {"size": 50, "filled": True},
}


# --- datasets ---------------------------------------------------------------------------------
def output_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as readers get them: dates as ``YYYY-MM-DD``, numbers to 6 significant figures.

    Both the CSV download and the chart's JSON are made from this frame, so a
    chart draws exactly the values a reader downloads.
    """
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            out[column] = values.dt.strftime("%Y-%m-%d")
        elif pd.api.types.is_float_dtype(values):
            out[column] = _round_significant(values.to_numpy(dtype=float))
    return out


def _round_significant(values: np.ndarray, figures: int = SIGNIFICANT_FIGURES) -> np.ndarray:
    finite = np.isfinite(values) & (values != 0)
    magnitude = np.zeros_like(values)
    magnitude[finite] = np.floor(np.log10(np.abs(values[finite])))
    decimals = (figures - 1 - magnitude).astype(int)
    rounded = values.copy()
    for places in np.unique(decimals[finite]):  # np.round takes one number of places at a time
        chosen = finite & (decimals == places)
        rounded[chosen] = np.round(values[chosen], int(places))
    return rounded


_MEMO: "OrderedDict[tuple, object]" = OrderedDict()
_MEMO_SIZE = 256


def _content_key(value: object) -> object:
    if isinstance(value, (pd.DataFrame, pd.Series)):
        # The pickle holds every value, label and type, so equal keys mean equal content (two
        # equal frames laid out differently in memory may miss, which only costs the work).
        # About ten times faster than pandas' hash_pandas_object on these small frames.
        return (type(value).__name__, hashlib.blake2b(pickle.dumps(value, protocol=5), digest_size=20).digest())
    return value


def memo_by_content(function):
    """Remember a function of DataFrames by the content of its arguments.

    Rows that every organisation's page shares (all organisations' values, funnel
    lines) are shaped the same way on every page; a warm kernel shapes them once per
    indicator, level and period instead of once per page. Results are returned as
    copies, so a caller cannot change what later callers get.
    """
    @functools.wraps(function)
    def remembered(*args, **kwargs):
        key = (function.__qualname__, tuple(_content_key(a) for a in args),
               tuple(sorted((name, _content_key(v)) for name, v in kwargs.items())))
        try:
            hit = _MEMO[key]
        except (KeyError, TypeError):  # TypeError: an argument that cannot be a key
            result = function(*args, **kwargs)
            try:
                _MEMO[key] = result
                if len(_MEMO) > _MEMO_SIZE:
                    _MEMO.popitem(last=False)
            except TypeError:
                pass
            return result.copy() if hasattr(result, "copy") else result
        _MEMO.move_to_end(key)
        return hit.copy() if hasattr(hit, "copy") else hit
    return remembered


def json_records(frame: pd.DataFrame) -> list[dict]:
    """The rows of :func:`output_frame` as JSON-ready records (missing values become null)."""
    out = output_frame(frame)
    return json.loads(out.to_json(orient="records", date_format="iso", double_precision=15))


def script_json(value: object) -> str:
    """JSON safe to place inside an HTML ``<script>`` element or a script file.

    ``<`` is escaped so that text from data ("</script>", "<!--") cannot end the element.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


@dataclass
class ChartData:
    """One named dataset of a chart: exactly the rows its specification reads by that name.

    Attributes
    ----------
    name : str
        The name the specification uses (``{"data": {"name": name}}``).
    frame : pandas.DataFrame
        The rows drawn, which are also the CSV download.
    label : str
        What the rows are, for the download link ("this organisation's values").
    shared_key : str or None
        Set when the rows are the same on every organisation's page (for example
        every sub-ICB location's value of one indicator in one period). A site
        stores such a dataset once under this key (see :mod:`moopt.charts.web`).
    """

    name: str
    frame: pd.DataFrame
    label: str
    shared_key: str | None = None
    _output: pd.DataFrame | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_chart_id(self.name)
        check_text(self.label, "dataset label")
        if not isinstance(self.frame, pd.DataFrame):
            raise ValueError(f"Dataset {self.name!r} must be a pandas DataFrame.")
        if self.shared_key is not None:
            check_chart_id(self.shared_key)

    def output(self) -> pd.DataFrame:
        """:func:`output_frame` of the rows, made once (the CSV and the chart's JSON both use it)."""
        if self._output is None:
            self._output = output_frame(self.frame)
        return self._output

    def records(self) -> list[dict]:
        return json.loads(self.output().to_json(orient="records", date_format="iso", double_precision=15))


# The top-level keys a page sets on a template; everything else is the template's own.
PAGE_KEYS = ("description", "params", "datasets")


def compact_rows(records: list[dict]) -> dict:
    """Rows as columns, values and constants: about half the size of JSON records.

    ``{"columns": [...], "constants": {...}, "rows": [[...], ...]}``: a column with
    the same value in every row is given once. The page script turns it back into
    records before drawing (``expand`` in ``moopt-charts.js``).
    """
    columns = list(records[0]) if records else []
    constants = {c: records[0][c] for c in columns if all(r.get(c) == records[0][c] for r in records)} \
        if len(records) > 1 else {}
    varying = [c for c in columns if c not in constants]
    return {"columns": varying, "constants": constants, "rows": [[r.get(c) for c in varying] for r in records]}


def expand_rows(compact: dict | list) -> list[dict]:
    """The records of :func:`compact_rows` again (what the page script does before drawing)."""
    if isinstance(compact, list):
        return compact
    return [{**compact["constants"], **dict(zip(compact["columns"], row))} for row in compact["rows"]]


@dataclass
class Chart:
    """A chart: its Vega-Lite specification, its datasets and the words that go with them.

    Attributes
    ----------
    chart_id : str
        Identifier safe for a file name, e.g. ``"AMR01_trend"``.
    title : str
        Chart title (shown above the chart as text, not drawn inside it).
    caption : str
        One or two sentences explaining how to read the chart.
    alt_text : str
        Text alternative with the key numbers; it becomes the drawing's ARIA description.
    datasets : list of ChartData
        Every dataset the specification reads, the first being the chart's main data.
    spec : dict or None
        The Vega-Lite specification, without data values (datasets are referred to by
        name) and without the shared look (:data:`VEGA_CONFIG`). Treat it as read-only:
        builders may return the same cached object for many charts. ``None`` for a
        chart with nothing to draw (see :func:`empty_chart`).
    params : dict
        Values of the specification's top-level parameters, e.g. ``{"org_code": "00L"}``.
    """

    chart_id: str
    title: str
    caption: str
    alt_text: str
    datasets: list[ChartData]
    spec: dict | None
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_chart_id(self.chart_id)
        for name in ("title", "caption", "alt_text"):
            check_text(getattr(self, name), name)
        if isinstance(self.datasets, ChartData):
            self.datasets = [self.datasets]
        if not self.datasets or not all(isinstance(d, ChartData) for d in self.datasets):
            raise ValueError("A chart needs at least one ChartData dataset.")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"Dataset names must be unique in a chart, not {names}.")
        if self.spec is not None:
            if not isinstance(self.spec, dict):
                raise ValueError("A chart specification must be a dict (Vega-Lite JSON).")
            missing = sorted(spec_data_names(self.spec) - set(names))
            if missing:
                raise ValueError(
                    f"The specification of chart {self.chart_id!r} reads dataset(s) "
                    f"{', '.join(missing)} that the chart does not carry.")
        for name in self.params:
            check_chart_id(name)

    # --- data -------------------------------------------------------------------------------
    @property
    def data(self) -> pd.DataFrame:
        """The chart's main dataset (the first)."""
        return self.datasets[0].frame

    def dataset(self, name: str) -> ChartData:
        for item in self.datasets:
            if item.name == name:
                return item
        raise KeyError(f"Chart {self.chart_id!r} has no dataset {name!r}.")

    def to_csv(self, path, dataset: str | None = None):
        """Write one dataset (the main one by default) as CSV atomically; return the path."""
        chosen = self.datasets[0] if dataset is None else self.dataset(dataset)
        return write_csv_atomic(chosen.output(), path)

    # --- specifications -----------------------------------------------------------------------
    def page_spec(self, inline: bool) -> dict:
        """The specification as a page embeds it: parameters set, description = alt text.

        With ``inline`` every dataset's rows are included; otherwise only those
        without a ``shared_key`` (the page's script supplies the shared ones).
        """
        if self.spec is None:
            raise ValueError(f"Chart {self.chart_id!r} has nothing to draw.")
        spec = dict(self.spec)  # shallow: the cached template itself is never changed
        spec["description"] = self.alt_text
        if self.params:
            declared = {p.get("name"): p for p in self.spec.get("params", [])}
            params = [p for name, p in declared.items() if name not in self.params]
            params += [{"name": name, "value": value} for name, value in self.params.items()]
            spec["params"] = params
        spec["datasets"] = {d.name: d.records() for d in self.datasets
                            if inline or d.shared_key is None}
        return spec

    def page_part(self, inline: bool) -> dict:
        """What this page adds to the cached template: the top-level keys :meth:`page_spec` sets."""
        spec = self.page_spec(inline)
        return {key: spec[key] for key in PAGE_KEYS if key in spec}

    def full_spec(self, width: int | None = None) -> dict:
        """A self-contained specification: every dataset inline, the moopt look included.

        ``width`` replaces a "container" width (needed where there is no page, as in
        vl-convert's static rendering).
        """
        spec = copy.deepcopy(self.page_spec(inline=True))
        spec.setdefault("$schema", vega_lite_schema_url())
        spec["config"] = _merge(copy.deepcopy(VEGA_CONFIG), spec.get("config", {}))
        if width is not None:
            _replace_container_width(spec, width)
        # A title may be long: limited, it wraps into the width instead of squashing the plot.
        spec.setdefault("title", {"text": self.title, "limit": max(120, (width or STATIC_WIDTH) - 40)})
        return spec

    def to_svg(self, width: int = STATIC_WIDTH) -> str:
        """A static SVG of the same specification, through vl-convert."""
        import vl_convert

        return vl_convert.vegalite_to_svg(self.full_spec(width), vl_version=vega_lite_version())

    def to_png(self, width: int = STATIC_WIDTH, scale: float = 2.0) -> bytes:
        """A static PNG (``scale`` times the pixel size, for sharp print) through vl-convert."""
        import vl_convert

        return vl_convert.vegalite_to_png(self.full_spec(width), scale=scale,
                                          vl_version=vega_lite_version())

    def to_altair(self):
        """The chart as an Altair object, for analysts who want to change it in a notebook."""
        import altair as alt

        spec = self.full_spec()
        kinds = {"layer": alt.LayerChart, "vconcat": alt.VConcatChart, "hconcat": alt.HConcatChart,
                 "concat": alt.ConcatChart, "facet": alt.FacetChart}
        kind = next((cls for key, cls in kinds.items() if key in spec), alt.Chart)
        return kind.from_dict(spec, validate=False)

    # --- HTML ---------------------------------------------------------------------------------
    def to_html(self, downloads: list[tuple[str, str]] = (), shared_scripts: dict[str, str] | None = None,
                static_image: str | None = None, inline: bool = False,
                template: tuple[str, str] | None = None) -> str:
        """A ``<figure>``: the chart's holder and specification, title, caption and data links.

        Parameters
        ----------
        downloads : list of (href, label)
            Links to the CSV files of the chart's datasets.
        shared_scripts : dict, optional
            ``shared_key -> href`` of the script file holding each shared dataset; a
            ``<script src>`` is written before the figure for each.
        static_image : str, optional
            Link to a static copy (SVG or PNG), shown where JavaScript is off.
        inline : bool
            Put every dataset in the page (for notebooks, where there is no site).
        template : (digest, href), optional
            The script file holding this chart's specification template (see
            :func:`moopt.charts.web.write_shared_template`): the page then carries only
            its own part (:meth:`page_part`). Without it the whole specification is inline.

        All text is HTML-escaped; the specification is JSON safe inside ``<script>``.
        """
        for href, _ in downloads:
            check_href(href)
        shared_scripts = dict(shared_scripts or {})
        parts: list[str] = []
        caption = ["<figcaption>", f'<span class="moopt-chart-title">{_escape(self.title)}</span>',
                   f'<span class="moopt-chart-caption">{_escape(self.caption)}</span>', "</figcaption>"]
        if self.spec is None:
            parts += [f'<figure class="moopt-chart moopt-chart-empty" id="{_escape(self.chart_id)}">',
                      *caption]
        else:
            shared = {} if inline else {d.name: d.shared_key for d in self.datasets if d.shared_key}
            for key in dict.fromkeys(shared.values()):
                if key not in shared_scripts:
                    raise ValueError(f"No script file given for the shared dataset {key!r}.")
                href = check_href(shared_scripts[key])
                parts.append(f'<script src="{_escape(href)}"></script>')
            if template is not None:
                parts.append(f'<script src="{_escape(check_href(template[1]))}"></script>')
            parts.append(f'<figure class="moopt-chart" id="{_escape(self.chart_id)}">')
            parts += caption
            spec = self.page_part(inline) if template is not None else self.page_spec(inline)
            spec["datasets"] = {name: compact_rows(rows) for name, rows in spec["datasets"].items()}
            template_attribute = f' data-moopt-template="{_escape(template[0])}"' if template else ""
            parts.append(f'<div class="moopt-vega" data-moopt-shared="{_escape(json.dumps(shared))}"'
                         f"{template_attribute}>")
            parts.append(f'<script type="application/json" class="moopt-vega-spec">{script_json(spec)}</script>')
            parts.append('<div class="moopt-vega-view"></div>')
            if static_image is not None:
                parts.append(f'<noscript><img class="moopt-chart-static" src="{_escape(check_href(static_image))}"'
                             f' alt="{_escape(self.alt_text)}"></noscript>')
            else:
                parts.append('<p class="moopt-vega-fallback">This chart is drawn by JavaScript in '
                             f'the browser. {_escape(self.alt_text)}</p>')
            parts.append("</div>")
        if downloads:
            parts.append('<p class="moopt-chart-downloads">' + "".join(
                f'<a class="moopt-chart-csv" href="{_escape(href)}" download>'
                f"Download {_escape(label)} (CSV)</a>" for href, label in downloads) + "</p>")
        parts.append("</figure>")
        return "\n".join(parts)

    def notebook_html(self, downloads: list[tuple[str, str]] = ()) -> str:
        """The chart for a notebook: data inline, the drawing scripts sent once per kernel."""
        from moopt.charts.web import DRAW_CHARTS_SCRIPT, notebook_scripts

        return notebook_scripts() + self.to_html(downloads, inline=True) + DRAW_CHARTS_SCRIPT

    def _repr_html_(self) -> str:  # shown by Jupyter
        return self.notebook_html()


def spec_data_names(spec: dict) -> set[str]:
    """Every dataset name a specification reads (``{"data": {"name": ...}}``, at any depth)."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and isinstance(data.get("name"), str):
                found.add(data["name"])
            for key, value in node.items():
                if key not in ("datasets", "config"):
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return found


def spec_from_altair(chart) -> dict:
    """The Vega-Lite dict of an Altair chart, without the schema and the shared look.

    The look is :data:`VEGA_CONFIG`, applied once per page; Altair's default view size
    is dropped with it.
    """
    spec = chart.to_dict()
    spec.pop("$schema", None)
    spec.pop("config", None)
    return spec


@lru_cache(maxsize=1)
def vega_lite_version() -> str:
    """The Vega-Lite version Altair writes (e.g. "6.4"), used for the bundle and static copies."""
    import altair as alt

    return ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])


def vega_lite_schema_url() -> str:
    import altair as alt

    return alt.SCHEMA_URL


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _replace_container_width(node: object, width: int) -> None:
    if isinstance(node, dict):
        if node.get("width") == "container":
            node["width"] = width
        for key, value in node.items():
            if key != "datasets":
                _replace_container_width(value, width)
    elif isinstance(node, list):
        for value in node:
            _replace_container_width(value, width)


def empty_chart(chart_id: str, title: str, reason: str, data: pd.DataFrame) -> Chart:
    """A chart saying there is nothing to show, carrying the (empty) data frame ``data``.

    Used for legitimately empty selections (for example an organisation with no
    member practices in the period), so callers never have to special-case them.
    """
    sentence = reason.rstrip(".") + "."
    return Chart(
        chart_id=chart_id,
        title=title,
        caption=f"{NO_DATA_MESSAGE}: {sentence}",
        alt_text=f"{NO_DATA_MESSAGE}. {sentence[:1].upper()}{sentence[1:]}",
        datasets=[ChartData("data", data.iloc[0:0].copy(), "the (empty) data")],
        spec=None,
    )


def _escape(text: str) -> str:
    return html.escape(str(text), quote=True)


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
    "group": ("group of practices", "groups of practices"),  # a run's own groups (moopt.groupings)
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
