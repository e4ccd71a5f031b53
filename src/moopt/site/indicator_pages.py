"""Indicator pages: one indicator, every organisation of one level, sortable and filterable.

``indicators/<level>/<ID>.html`` lists every organisation of the level with its
value, 95% interval, verdict against England in words and trend, in the
indicator's latest period of its main period type (what the organisation pages
show), with the national distribution, the definition and a link to the
methodology page. Everything is read from the store through
:meth:`moopt.tables.ResultsReader.indicator_table`: one query per
indicator for all its levels. The table sorts and filters with ``assets/moopt-tables.js``
(templates/tables.js); without JavaScript it is a plain table in name order.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from moopt.orgs import ORG_LEVEL_PLURALS, ORG_LEVELS
from moopt.site.downloads import main_period_type, stored_run_facts
from moopt.site.markdown import md_link, md_text, raw_html_block
from moopt.site.plan import DIRECTION_LABELS
from moopt.tables import ResultsReader, table_exists

INDICATOR_DIR = "indicators"
TABLE_SCRIPT_FILE = "assets/moopt-tables.js"
# A page of one row says nothing an organisation page does not: England gets none.
NO_PAGE_LEVELS = ("england",)


def indicator_page_url(level: str, indicator_id: str) -> str:
    """Site-root-relative URL of an indicator page."""
    return f"{INDICATOR_DIR}/{level}/{indicator_id}.html"


def indicator_page_levels(download_levels) -> list[str]:
    """The levels that get indicator pages: those in the downloads, England aside."""
    return [level for level in ORG_LEVELS if level in download_levels and level not in NO_PAGE_LEVELS]


@dataclass
class IndicatorPage:
    """One page's content, ready to write."""

    indicator_id: str
    level: str
    title: str
    body: str
    rows: int

    @property
    def source(self) -> str:
        return f"{INDICATOR_DIR}/{self.level}/{self.indicator_id}.qmd"


def _number(value, decimals: int) -> str:
    return "no value" if value is None or pd.isna(value) else f"{value:,.{decimals}f}"


def verdict_words(row) -> str:
    """The one verdict (99.8% funnel) in words, or why there is none."""
    side, assessment = row.get("comparison_99_8"), row.get("assessment_99_8")
    if isinstance(side, str):
        if side == "similar":
            return "similar to England"
        relation = f"{side} than England"
        return f"{assessment}: {relation}" if isinstance(assessment, str) and assessment not in (side,) else relation
    reason = row.get("not_compared_reason")
    if isinstance(reason, str) and reason.strip():
        text = reason.strip().rstrip(".")
        first = text.split(" ", 1)[0]
        if first != "England" and not first.isupper():
            text = text[0].lower() + text[1:]
        return f"not compared: {text}"
    return "not compared"


def trend_words(row) -> str:
    """The stored change per year (95% interval) and the recent-trend marker, in words."""
    parts = []
    change = row.get("change_per_year")
    if change is not None and pd.notna(change):
        parts.append(f"{100 * change:+.1f}% a year (95% CI {100 * row['change_per_year_lower']:+.1f}% to "
                     f"{100 * row['change_per_year_upper']:+.1f}%)")
    recent = row.get("recent_trend")
    if isinstance(recent, str) and recent != "cannot be calculated":
        parts.append(f"last five months: {recent}")
    if parts:
        return "; ".join(parts)
    points = row.get("trend_points")
    return "too short to model" if points is not None and pd.notna(points) else "not modelled"


def table_cell(text: str, sort_value=None) -> str:
    if sort_value is None or (not isinstance(sort_value, str) and pd.isna(sort_value)):
        return f"<td>{html.escape(text)}</td>"
    return f'<td data-sort="{html.escape(str(sort_value), quote=True)}">{html.escape(text)}</td>'


def sortable_table(table_id: str, plural: str, caption: str, headers: list[tuple[str, str]],
                   rows: list[str]) -> str:
    """A table that ``assets/moopt-tables.js`` sorts and filters, with its (hidden until then) filter box.

    ``headers`` are (heading, "text" or "number"); ``rows`` are finished ``<tr>`` elements.
    """
    return (
        '<div class="moopt-table-tools" hidden>'
        f'<label for="{table_id}-filter">Filter {html.escape(plural)} by name or code</label> '
        f'<input type="search" id="{table_id}-filter" class="moopt-table-filter" data-table="{table_id}" '
        f'autocomplete="off"> <span class="moopt-table-count" aria-live="polite"></span></div>\n'
        f'<table class="moopt-table moopt-sortable" id="{table_id}"><caption>{html.escape(caption)}</caption>'
        "<thead><tr>"
        + "".join(f'<th scope="col" data-sort-type="{t}">{html.escape(h)}</th>' for h, t in headers)
        + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _period_words(period, period_type: str) -> str:
    month = pd.Timestamp(period).strftime("%B %Y")
    return {"rolling_12m": f"the 12 months to {month}", "quarter": f"the quarter to {month}",
            "year": f"the year to {month}"}.get(period_type, month)


def indicator_page(indicator, level: str, frame: list[dict], org_pages: dict[str, str],
                   methodology_url: str | None) -> IndicatorPage:
    """The Markdown body of one indicator page (HTML blocks for the table).

    Parameters
    ----------
    indicator : moopt.indicators.definitions.Indicator
    level : str
        The organisations' level.
    frame : list of dict
        :meth:`~moopt.tables.ResultsReader.indicator_table` rows of the indicator at this level.
    org_pages : dict
        Organisation code -> site-root-relative URL of its page, for those that have one.
    methodology_url : str or None
        Site-root-relative URL of the indicator's methodology page.
    """
    depth = "../../"
    d = indicator.value_decimals
    plural = ORG_LEVEL_PLURALS[level]
    first = frame[0]
    when = _period_words(first["period"], first["period_type"])
    title = f"{indicator.id}: {indicator.short_title}, all {plural}"
    with_value = [r for r in frame if pd.notna(r["value"])]
    lines = [
        f"{md_text(indicator.title)}. {md_text(len(frame))} {md_text(plural)} in {md_text(when)}; unit: "
        f"{md_text(indicator.unit)}. {md_text(DIRECTION_LABELS.get(indicator.improvement_direction, ''))}, "
        "as a prompt for discussion, not a target.",
        "",
        "## National distribution",
        "",
        f"England: {md_text(_number(first.get('england_value'), d))}. Across the {len(with_value)} "
        f"{md_text(plural)} with a value: lowest {md_text(_number(first.get('lowest'), d))}, 10th percentile "
        f"{md_text(_number(first.get('decile_10'), d))}, median {md_text(_number(first.get('decile_50'), d))}, "
        f"90th percentile {md_text(_number(first.get('decile_90'), d))}, highest "
        f"{md_text(_number(first.get('highest'), d))}.",
        "",
        f"## All {md_text(plural)}",
        "",
    ]
    table_id = f"moopt-table-{indicator.id}-{level}"
    rows = []
    for r in frame:
        name = html.escape(str(r["org_name"] or r["org_code"]))
        url = org_pages.get(r["org_code"])
        org = f'<a href="{depth}{url}">{name}</a>' if url else name
        interval = ("no interval" if pd.isna(r.get("lower_95")) or pd.isna(r.get("upper_95"))
                    else f"{_number(r['lower_95'], d)} to {_number(r['upper_95'], d)}")
        rows.append(
            f'<tr><td data-sort="{html.escape(str(r["org_name"] or r["org_code"]), quote=True)}">{org}</td>'
            + table_cell(str(r["org_code"]), str(r["org_code"]))
            + table_cell(_number(r["value"], d), r["value"])
            + table_cell(interval, r.get("lower_95"))
            + table_cell(verdict_words(r), verdict_words(r))
            + table_cell(trend_words(r), r.get("change_per_year"))
            + "</tr>")
    has_trends = any(pd.notna(r["trend_points"]) or isinstance(r["recent_trend"], str) for r in frame)
    caption = (f"{indicator.id} for all {plural}, {when}. Compared with England: the "
               "organisation's place in the funnel against England's value with 99.8% limits that allow for "
               "overdispersion (the verdict of the organisation pages). Select a column heading to sort.")
    headers = ["Organisation", "Code", f"Value ({indicator.unit})", "95% interval", "Compared with England",
               "Trend"]
    types = ["text", "text", "number", "number", "text", "number"]
    table = (sortable_table(table_id, plural, caption, list(zip(headers, types)), rows)
             + f'\n<script src="{depth}{TABLE_SCRIPT_FILE}" defer></script>')
    lines.append(raw_html_block(table))
    if not has_trends:
        lines += [f"Trends are modelled for series levels only; {md_text(plural)} have none in this run.", ""]
    lines += ["## Definition", "", md_text(indicator.description), "",
              f"**Why it matters.** {md_text(indicator.why_it_matters)}", "",
              f"**Numerator:** {md_text(indicator.numerator.description)}  ",
              f"**Denominator:** {md_text(indicator.denominator.description)}  ",
              f"**Unit:** {md_text(indicator.unit)}", ""]
    if methodology_url:
        lines += [f"How it is calculated, its sources and caveats: "
                  f"{md_link('the methodology page for ' + indicator.id, depth + methodology_url)}.", ""]
    return IndicatorPage(indicator.id, level, title, "\n".join(lines), len(frame))


def indicator_pages(store_path: Path, levels: list[str], org_pages: dict[tuple[str, str], str],
                    methodology_urls: dict[str, str]) -> list[IndicatorPage]:
    """Every indicator page of a run: each indicator with rows, at each of ``levels``.

    One query per indicator, for every level (:meth:`ResultsReader.indicator_table`);
    the period is each indicator's latest of its main period type up to the run's last month.
    """
    from moopt.indicators.definitions import load_indicators

    con = duckdb.connect(str(store_path), read_only=True)
    try:
        if not (table_exists(con, "indicator_results") and table_exists(con, "run_facts")):
            return []
        reader = ResultsReader(con)
        facts = stored_run_facts(con)
        available: dict[str, set[str]] = {}
        for indicator_id, period_type in con.execute(
                "SELECT DISTINCT indicator_id, period_type FROM indicator_results").fetchall():
            available.setdefault(indicator_id, set()).add(period_type)
        definitions = {ind.id: ind for ind in load_indicators()}
        by_level: dict[str, dict[str, str]] = {}
        for (level, code), url in org_pages.items():
            by_level.setdefault(level, {})[code] = url
        pages = []
        for indicator_id in sorted(available):
            indicator = definitions.get(indicator_id)
            if indicator is None:  # an older store's indicator: no definition to show
                continue
            period_type = main_period_type(indicator_id, available[indicator_id],
                                           bool(facts.get("has_rolling", True)), definitions)
            grouped: dict[str, list[dict]] = {}
            for record in reader.indicator_table(indicator_id, levels, period_type,
                                                 facts.get("period_end") or "9999-12-01").to_dict("records"):
                grouped.setdefault(record["org_level"], []).append(record)
            for level in levels:
                frame = grouped.get(level)
                if not frame:
                    continue
                pages.append(indicator_page(indicator, level, frame, by_level.get(level, {}),
                                            methodology_urls.get(indicator_id)))
        return pages
    finally:
        con.close()
