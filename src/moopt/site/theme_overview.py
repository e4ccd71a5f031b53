"""A theme's overview table: organisations x indicators, each cell a value and its verdict.

Fingertips calls this layout a "tartan rug". Each row is an organisation with a
page in the run, each column one of the theme's indicators, and each cell the
latest value (each indicator's latest period of its main period type: the rows
of the bulk "latest" download) with the one verdict against England (the 99.8%
funnel) given three ways: a shape for the side (▲ higher, ▼ lower, ● similar,
– not compared), a word (better, worse, higher, lower, similar, not compared)
and a background tint. Colour never carries the meaning alone. One table per
level that has pages; the tables sort and filter with ``assets/moopt-tables.js``.
"""

from __future__ import annotations

import html
from pathlib import Path

import duckdb
import pandas as pd

from moopt.orgs import ORG_LEVEL_PLURALS
from moopt.site.downloads import selection
from moopt.site.indicator_pages import sortable_table
from moopt.tables import table_exists

SHAPES = {"higher": "▲", "lower": "▼", "similar": "●"}
NOT_COMPARED_SHAPE = "–"


def verdict_parts(comparison, assessment) -> tuple[str, str, str]:
    """(shape, word, CSS modifier) of one stored verdict (``comparison_99_8``, ``assessment_99_8``)."""
    if not isinstance(comparison, str):
        return NOT_COMPARED_SHAPE, "not compared", "none"
    if comparison == "similar":
        return SHAPES["similar"], "similar", "similar"
    word = assessment if isinstance(assessment, str) and assessment in ("better", "worse") else comparison
    return SHAPES.get(comparison, NOT_COMPARED_SHAPE), word, word if word in ("better", "worse") else "differs"


def read_theme_rows(store_path: Path, indicator_ids: list[str], levels: list[str]) -> pd.DataFrame:
    """The latest rows of ``indicator_ids`` at ``levels``: the bulk download's selection of them."""
    empty = pd.DataFrame(columns=["indicator_id", "org_level", "org_code", "value", "comparison_99_8",
                                  "assessment_99_8"])
    if not indicator_ids or not levels or not Path(store_path).is_file():
        return empty
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        if not table_exists(con, "indicator_results"):
            return empty
        latest = selection(con).narrowed(levels, indicator_ids)
        return con.execute(latest.latest_sql(
            "r.indicator_id, r.org_level, r.org_code, r.value, r.comparison_99_8, r.assessment_99_8")).fetchdf()
    finally:
        con.close()


def _decimals(indicator: dict) -> int:
    value = indicator.get("value_decimals")
    return int(value) if isinstance(value, int) else 1


def overview_table(level: str, orgs: list, indicators: list[dict], rows: pd.DataFrame,
                   theme_title: str, depth: str) -> str:
    """One level's organisations x indicators table (HTML).

    Parameters
    ----------
    level : str
    orgs : list of moopt.site.plan.OrgInfo
        The organisations of ``level`` with pages, in the order to show.
    indicators : list of dict
        The theme's indicators (id, short_title or title, unit, value_decimals).
    rows : DataFrame
        :func:`read_theme_rows` output.
    theme_title : str
    depth : str
        The path from the page to the site root.
    """
    cells = {(r.indicator_id, r.org_code): r for r in rows[rows["org_level"] == level].itertuples()}
    body = []
    for org in orgs:
        parts = [f'<td data-sort="{html.escape(org.name, quote=True)}"><a href="{depth}orgs/{org.level}/'
                 f'{org.code}/index.html">{html.escape(org.label)}</a></td>']
        for ind in indicators:
            row = cells.get((ind["id"], org.code))
            if row is None or pd.isna(row.value):
                parts.append('<td data-sort="" class="moopt-verdict moopt-verdict--none">no value</td>')
                continue
            shape, word, modifier = verdict_parts(row.comparison_99_8, row.assessment_99_8)
            parts.append(
                f'<td data-sort="{row.value!r}" class="moopt-verdict moopt-verdict--{modifier}">'
                f'{row.value:,.{_decimals(ind)}f} <span aria-hidden="true">{shape}</span> '
                f'<span class="moopt-verdict-word">{html.escape(word)}</span></td>')
        body.append("<tr>" + "".join(parts) + "</tr>")
    plural = ORG_LEVEL_PLURALS.get(level, level)
    headers = [("Organisation", "text")] + [
        (f"{ind['id']} {ind.get('short_title') or ind.get('title', '')} ({ind.get('unit', '')})", "number")
        for ind in indicators]
    caption = (f"{theme_title}: every indicator for the {len(orgs)} {plural} with pages, latest period. "
               "Each cell gives the value, then the verdict against England (99.8% funnel limits): "
               "▲ higher, ▼ lower, ● similar, – not compared, and in words better or worse where the indicator "
               "has a preferred direction. Select a column heading to sort.")
    return sortable_table(f"moopt-overview-{level}", plural, caption, headers, body)
