"""Lists down the hierarchy: on each organisation's page, the organisations within it.

A region's page lists its integrated care boards, an ICB's its sub-ICB locations,
a sub-ICB location's its primary care networks and GP practices, a PCN's its
practices; England's (the home page) lists the regions. Each row is one
organisation with its registered patients and how its indicators compare with
England by the one verdict (the 99.8% funnel of :mod:`moopt.results`), counted
over each indicator's latest period of its main period type: the rows the bulk
"latest" download holds. Names link to the organisation's own page where the run
built one. The tables sort with ``assets/moopt-tables.js``.

Everything comes from two queries over the whole store, so a national site pays
for them once, not once per page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from moopt.orgs import ENGLAND_CODE, ORG_LEVEL_COLUMNS, ORG_LEVEL_LABELS, ORG_LEVEL_PLURALS
from moopt.site.downloads import selection
from moopt.site.indicator_pages import TABLE_SCRIPT_FILE, sortable_table, table_cell
from moopt.tables import table_exists

# The levels each level lists below it, nearest first.
CHILD_LEVELS: dict[str, tuple[str, ...]] = {
    "england": ("region",),
    "region": ("icb",),
    "icb": ("sub_icb",),
    "sub_icb": ("pcn", "practice"),
    "pcn": ("practice",),
}
# The columns of indicator_results that name each child's parent at the level above.
PARENT_COLUMN: dict[str, str] = {
    "region": "region_code", "icb": "icb_code", "sub_icb": "sub_icb_code", "pcn": "pcn_code",
}
COUNT_COLUMNS = ("compared", "similar", "better", "worse", "differs", "not_compared")


@dataclass(frozen=True)
class ChildRow:
    """One organisation in a list: its verdict counts over the latest period of every indicator."""

    level: str
    code: str
    name: str
    patients: float | None
    compared: int
    similar: int
    better: int
    worse: int
    differs: int
    not_compared: int


def _verdict_counts(con: duckdb.DuckDBPyConnection, levels: tuple[str, ...]) -> pd.DataFrame:
    """Per organisation at ``levels``: its parents' codes and its indicators by verdict."""
    latest = selection(con).narrowed(levels)
    rows = latest.latest_sql(
        "r.org_level, r.org_code, r.org_name, r.pcn_code, r.sub_icb_code, r.icb_code, r.region_code, "
        "r.comparison_99_8, r.assessment_99_8")
    return con.execute(f"""
        SELECT org_level, org_code, any_value(org_name) AS org_name, any_value(pcn_code) AS pcn_code,
               any_value(sub_icb_code) AS sub_icb_code, any_value(icb_code) AS icb_code,
               any_value(region_code) AS region_code,
               count(comparison_99_8) AS compared,
               count(*) FILTER (WHERE comparison_99_8 = 'similar') AS similar,
               count(*) FILTER (WHERE comparison_99_8 <> 'similar' AND assessment_99_8 = 'better') AS better,
               count(*) FILTER (WHERE comparison_99_8 <> 'similar' AND assessment_99_8 = 'worse') AS worse,
               count(*) FILTER (WHERE comparison_99_8 <> 'similar'
                                AND coalesce(assessment_99_8, '') NOT IN ('better', 'worse')) AS differs,
               count(*) FILTER (WHERE comparison_99_8 IS NULL) AS not_compared
        FROM ({rows}) GROUP BY org_level, org_code""").fetchdf()


def _patients(con: duckdb.DuckDBPyConnection, levels: tuple[str, ...]) -> pd.DataFrame:
    """Registered patients of every organisation at ``levels`` in the latest month of list sizes."""
    if not (table_exists(con, "list_size") and table_exists(con, "organisations")):
        return pd.DataFrame(columns=["org_level", "org_code", "patients"])
    parts = []
    for level in levels:
        code = ORG_LEVEL_COLUMNS[level][0]
        parts.append(
            f"SELECT '{level}' AS org_level, o.{code} AS org_code, sum(l.patients) AS patients "
            "FROM list_size AS l JOIN organisations AS o USING (practice_code) "
            f"WHERE l.month = (SELECT max(month) FROM list_size) AND o.{code} IS NOT NULL GROUP BY o.{code}")
    return con.execute(" UNION ALL ".join(parts)).fetchdf()


def read_child_rows(store_path: Path) -> dict[tuple[str, str], dict[str, list[ChildRow]]]:
    """Every list of the run: (parent level, parent code) -> {child level: rows in name order}.

    Returns an empty dict when the store has no results (a run without the results stage).
    """
    if not Path(store_path).is_file():
        return {}
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        if not table_exists(con, "indicator_results"):
            return {}
        stored = {r[0] for r in con.execute("SELECT DISTINCT org_level FROM indicator_results").fetchall()}
        levels = tuple(level for level in ("region", "icb", "sub_icb", "pcn", "practice") if level in stored)
        if not levels:
            return {}
        counts = _verdict_counts(con, levels)
        patients = _patients(con, levels)
    finally:
        con.close()
    frame = counts.merge(patients, on=["org_level", "org_code"], how="left")
    frame = frame.sort_values(["org_name", "org_code"], key=lambda c: c.astype(str).str.lower())
    lists: dict[tuple[str, str], dict[str, list[ChildRow]]] = {}
    for record in frame.to_dict("records"):
        level = record["org_level"]
        row = ChildRow(level=level, code=str(record["org_code"]), name=str(record["org_name"] or record["org_code"]),
                       patients=None if pd.isna(record["patients"]) else float(record["patients"]),
                       **{c: int(record[c]) for c in COUNT_COLUMNS})
        for parent_level, child_levels in CHILD_LEVELS.items():
            if level not in child_levels:
                continue
            if parent_level == "england":
                parent_code = ENGLAND_CODE
            else:
                parent_code = record.get(PARENT_COLUMN[parent_level])
                if parent_code is None or (not isinstance(parent_code, str) and pd.isna(parent_code)):
                    continue
            lists.setdefault((parent_level, str(parent_code)), {}).setdefault(level, []).append(row)
    return lists


def child_table(parent_name: str, level: str, rows: list[ChildRow], org_pages: dict[tuple[str, str], str],
                depth: str) -> str:
    """One sortable HTML table of the ``level`` organisations within a parent.

    Parameters
    ----------
    parent_name : str
        The parent's name, for the caption.
    level : str
        The children's level.
    rows : list of ChildRow
    org_pages : dict
        (level, code) -> site-root-relative URL of the organisations that have a page.
    depth : str
        The path from the page to the site root ("", "../../../").
    """
    plural = ORG_LEVEL_PLURALS[level]
    table_id = f"moopt-children-{level}"
    body = []
    for row in rows:
        url = org_pages.get((row.level, row.code))
        name = html.escape(row.name)
        linked = f'<a href="{depth}{url}">{name}</a>' if url else name
        patients = "not known" if row.patients is None else f"{row.patients:,.0f}"
        body.append(
            f'<tr><td data-sort="{html.escape(row.name, quote=True)}">{linked}</td>'
            + table_cell(row.code, row.code) + table_cell(patients, row.patients)
            + "".join(table_cell(f"{getattr(row, c):,}", getattr(row, c)) for c in COUNT_COLUMNS)
            + "</tr>")
    label = ORG_LEVEL_LABELS[level]
    if len(label) > 1 and label[1].islower():  # "Integrated care board", not "GP practice"
        label = label[0].lower() + label[1:]
    counted = f"The {len(rows)} {plural}" if len(rows) != 1 else f"The one {label}"
    caption = (f"{counted} in {parent_name}: registered patients, and how many indicators "
               "differ from England by the one verdict (each indicator's latest period; 99.8% funnel "
               "limits). Better and worse follow each indicator's preferred direction; \"differs\" counts "
               "indicators with no preferred direction. Select a column heading to sort.")
    headers = [("Organisation", "text"), ("Code", "text"), ("Registered patients", "number"),
               ("Indicators compared", "number"), ("Similar to England", "number"), ("Better", "number"),
               ("Worse", "number"), ("Differs, no preferred direction", "number"), ("Not compared", "number")]
    return sortable_table(table_id, plural, caption, headers, body)


def children_section(parent_name: str, lists: dict[str, list[ChildRow]],
                     org_pages: dict[tuple[str, str], str], depth: str, heading: str = "##") -> str:
    """Markdown (with HTML blocks) of every list of one parent, or "" when it has none."""
    from moopt.site.markdown import md_text, raw_html_block

    if not lists:
        return ""
    parts = []
    order = [level for levels in CHILD_LEVELS.values() for level in levels]
    for level, rows in sorted(lists.items(), key=lambda item: order.index(item[0])):
        plural = ORG_LEVEL_PLURALS[level]
        parts += [f"{heading} {md_text(plural[:1].upper() + plural[1:])} in {md_text(parent_name)}", "",
                  raw_html_block('<section class="moopt-children">' + child_table(parent_name, level, rows,
                                                                                   org_pages, depth)
                                 + "</section>"), ""]
    parts.append(raw_html_block(f'<script src="{depth}{TABLE_SCRIPT_FILE}" defer></script>'))
    return "\n".join(parts) + "\n"
