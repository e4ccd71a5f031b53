"""A static JSON file API in the built site: a file per organisation and per indicator.

Under ``<site>/api/v1/`` the build writes:

- ``index.json``: the run, its levels, its indicators and its organisations, each
  with the path of its file;
- ``organisations/<level>/<code>.json``: one organisation's latest value of every
  indicator (numerator, denominator, value, 95% interval, England's value, the one
  verdict, trend and SPC signal as stored), with its parent and children;
- ``indicators/<level>/<ID>.json``: one indicator for every organisation of a level,
  with the level's national distribution.

The rows are those of the bulk downloads (:mod:`moopt.site.downloads`): each
indicator's latest period of its main period type, read from ``indicator_results``
through the same :class:`~moopt.site.downloads.Selection`, and every number is
rounded by the same SQL (:func:`~moopt.site.downloads.rounded`), so a value in a
JSON file equals the cell of the latest CSV. The levels are those of the downloads
(every stored level but practice), plus practice when the run's pages include
practices: at national scale practice files would add about 180 MB (see
``benchmarks/bench_file_api.py``).

The files depend only on the store and the run's title and version: no clock time,
keys in a fixed order, organisations and indicators sorted, so two builds of the same
results write the same bytes. Missing and non-finite numbers are ``null``. Each file
is written atomically (:mod:`moopt.atomic`), inside a site folder that is itself
swapped into place only when complete.

``docs/file-api.md`` is generated from :data:`FIELDS` by
``python -m moopt.site.file_api > docs/file-api.md``; a test fails when the two differ.
"""

from __future__ import annotations

import html
import json
import math
import sys
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb

from moopt.atomic import write_text_atomic
from moopt.orgs import ENGLAND_CODE, ORG_LEVEL_LABELS, ORG_LEVELS
from moopt.site.downloads import (
    LATEST_CSV_FILE,
    PRACTICE_LEVEL,
    RESULTS_TABLE,
    SIGNIFICANT_FIGURES,
    rounded,
    selection,
    stored_run_facts,
)
from moopt.site.files import link_file
from moopt.site.indicator_pages import NO_PAGE_LEVELS, indicator_page_url, verdict_words
from moopt.site.plan import org_index_url
from moopt.tables import TABLES, UNITS, check_columns, table_exists

SCHEMA_VERSION = "1.0"
API_DIR = "api/v1"  # under the site root; the major version is in the path
INDEX_FILE = "index.json"
ORGANISATION_DIR = "organisations"
INDICATOR_DIR = "indicators"
# What the files were made from; a later build with the same stamp links them instead.
STAMP_FILE = ".moopt-api-stamp"
# Each organisation's parent columns, nearest first (practice -> PCN -> sub-ICB -> ICB -> region).
PARENT_COLUMNS = (("pcn", "pcn_code"), ("sub_icb", "sub_icb_code"), ("icb", "icb_code"),
                  ("region", "region_code"))

# What every file says of an organisation's latest row, in this order (stored column names,
# as in the bulk CSV, so the two join on them).
ROW_NUMBERS = ("numerator", "denominator", "value", "lower_95", "upper_95", "england_value")
ROW_VERDICT = ("comparison_99_8", "assessment_99_8", "not_compared_reason")
DISTRIBUTION = ("england_value", "lowest", *(f"decile_{d}" for d in range(10, 100, 10)), "highest",
                "quartile_25", "quartile_75")
TREND_COLUMNS = ("trend_points", "change_per_year", "change_per_year_lower", "change_per_year_upper",
                 "recent_trend")
SPC_COLUMNS = ("variation_icon", "last_period", "spc_points", "spc_trial_limits")
_IDENTITY = ("indicator_id", "org_level", "org_code", "org_name", *(c for _, c in PARENT_COLUMNS))
_LATEST = (*_IDENTITY, "period", "period_type", "improvement_direction",
           *dict.fromkeys((*ROW_NUMBERS, *ROW_VERDICT, *DISTRIBUTION)))


def api_file(*parts: str) -> str:
    """Path of an API file relative to the ``api/v1/`` folder (the form every ``file`` field takes)."""
    return "/".join(parts)


def organisation_file(level: str, code: str) -> str:
    return api_file(ORGANISATION_DIR, level, f"{code}.json")


def indicator_file(level: str, indicator_id: str) -> str:
    return api_file(INDICATOR_DIR, level, f"{indicator_id}.json")


def api_levels(stored_levels, download_levels, page_levels) -> tuple[str, ...]:
    """The levels that get organisation files.

    Those of the bulk downloads (every stored level but practice, unless the run is a
    practice-level run), plus practice when the run's pages include practices: some
    6,200 practice files and their indicator files would add about 180 MB to a national
    site (``benchmarks/bench_file_api.py``), so they are written only for a run that
    shows practices.
    """
    chosen = set(download_levels)
    if PRACTICE_LEVEL in set(page_levels) and PRACTICE_LEVEL in set(stored_levels):
        chosen.add(PRACTICE_LEVEL)
    known = [level for level in ORG_LEVELS if level in chosen]
    return tuple(known + sorted(chosen - set(known)))


def indicator_file_levels(levels) -> tuple[str, ...]:
    """The levels that get indicator files: as indicator pages, England has none (one row)."""
    return tuple(level for level in levels if level not in NO_PAGE_LEVELS)


# --- the schema, documented ---------------------------------------------------------------------

def _stored(column: str) -> tuple[str, str]:
    """Unit and meaning of a stored column, from the table contract (moopt.tables)."""
    for table in ("indicator_results", "trends", "spc_series"):
        for c in TABLES[table].columns:
            if c.name == column:
                return UNITS.get(column, c.unit), c.description
    raise KeyError(column)


def _field(name: str, kind: str, unit: str = "", meaning: str = "") -> tuple[str, str, str, str]:
    if not meaning:
        unit, meaning = _stored(name.rsplit(".", 1)[-1])
    return name, kind, unit, meaning


_VERDICT_WORDS = ("The verdict in words as the pages show it, e.g. \"worse: higher than England\", "
                  "\"similar to England\" or \"not compared: ...\" with the reason.")
_TREND = ("trend", "object or null", "", "The modelled change over time (series levels only: the run's "
          "page level); null where none is stored.")
_SPC = ("spc", "object or null", "", "The SPC (Making Data Count) signal of the latest point; null where "
        "the level has no SPC series.")
_ROW_FIELDS = (
    *(_field(c, "number or null") for c in ROW_NUMBERS),
    *(_field(c, "string or null") for c in ROW_VERDICT),
    ("verdict", "string", "", _VERDICT_WORDS),
    _TREND,
    *(_field(f"trend.{c}", "number or null" if c != "recent_trend" else "string or null")
      for c in TREND_COLUMNS),
    _SPC,
    _field("spc.variation_icon", "string or null"),
    ("spc.last_period", "string (date) or null", UNITS["period"], "The latest point of the SPC series."),
    _field("spc.spc_points", "integer or null"),
    _field("spc.spc_trial_limits", "boolean or null"),
)

# (file, field, JSON type, unit, meaning). "a.b" is field b of object a; "a[].b" of each item of list a.
FIELDS: tuple[tuple[str, tuple[tuple[str, str, str, str], ...]], ...] = (
    ("Every file", (
        ("schema_version", "string", "", f"The schema of the file, \"{SCHEMA_VERSION}\". A change that "
         "removes or renames a field gets a new major version and a new folder (api/v2)."),
    )),
    (INDEX_FILE, (
        ("run.title", "string", "", "The site's title."),
        ("run.period_start", "string (date)", UNITS["period"], "First month of the reporting period."),
        ("run.period_end", "string (date)", UNITS["period"],
         "Last month of the reporting period: every value is of a period up to it."),
        ("run.synthetic", "boolean", "", "True when the data are moopt's synthetic set, not real NHS data."),
        ("run.results_key", "string", "", "Hash of every input of the results: the same key, the same numbers "
         "(the files carry no build time, so identical results give identical files)."),
        ("run.moopt_version", "string", "", "The moopt version that built the site."),
        ("run.significant_figures", "integer", "", "Numbers are rounded to this many significant figures, "
         "never fewer than their whole-number digits, as in the bulk CSV."),
        ("run.bulk_csv", "string", "", "Path of the bulk CSV of the same rows, relative to the site root."),
        ("levels[].level", "string", "", "Organisation level id: region, icb, sub_icb, pcn, practice, england, "
         "group."),
        ("levels[].label", "string", "", "The level in words."),
        ("levels[].organisations", "integer", "organisations", "Organisations of the level with a file."),
        ("levels[].indicator_files", "boolean", "", "True when the level has indicator files (not England)."),
        ("indicators[].id", "string", "", "Indicator id, e.g. AMR01."),
        ("indicators[].title", "string or null", "", "Full title (null for an indicator this version of moopt "
         "has no definition for)."),
        ("indicators[].short_title", "string or null", "", "Short title used in charts."),
        ("indicators[].unit", "string or null", "", "The unit of `value`, e.g. items per 1,000 patients."),
        ("indicators[].improvement_direction", "string", "", "increase, decrease or neutral: which way is "
         "better (a prompt for discussion, not a target)."),
        ("indicators[].themes[]", "object", "", "The themes listing the indicator: `id` and `title`."),
        ("indicators[].period", "string (date)", UNITS["period"], "The period of every file of the indicator "
         "(first day of its last month)."),
        ("indicators[].period_type", "string", "", "month, quarter, rolling_12m (12 months to `period`) or year."),
        ("indicators[].files", "object", "", "Level -> path of the indicator file at that level."),
        ("indicators[].pages", "object", "", "Level -> the indicator's page, relative to the site root."),
        ("organisations[].level", "string", "", "Organisation level id."),
        ("organisations[].code", "string", "", "Organisation code (ENG for England)."),
        ("organisations[].name", "string", "", "Organisation name."),
        ("organisations[].parent_level", "string or null", "", "Level of the parent organisation."),
        ("organisations[].parent_code", "string or null", "", "Code of the parent organisation."),
        ("organisations[].file", "string", "", "Path of the organisation file."),
        ("organisations[].page", "string or null", "", "The organisation's page, relative to the site root "
         "(null where the run has no page for it)."),
    )),
    ("organisations/<level>/<code>.json", (
        ("organisation.level", "string", "", "Organisation level id."),
        ("organisation.label", "string", "", "The level in words."),
        ("organisation.code", "string", "", "Organisation code."),
        ("organisation.name", "string", "", "Organisation name."),
        ("organisation.page", "string or null", "", "Its page, relative to the site root."),
        ("organisation.parent", "object or null", "", "The parent organisation: `level`, `code`, `name`, "
         "`file` (null for England and for a run's own groups)."),
        ("organisation.children[]", "object", "", "Organisations one level down whose parent this is: `level`, "
         "`code`, `name`, `file`. At a level without files (e.g. practices) `file` is null and the children "
         "are those with results in the level's latest period up to the run's last month."),
        ("period_end", "string (date)", UNITS["period"], "The run's last month."),
        ("indicators[].id", "string", "", "Indicator id."),
        ("indicators[].unit", "string or null", "", "The unit of `value` (the title is in index.json)."),
        ("indicators[].improvement_direction", "string or null", "", "increase, decrease or neutral."),
        ("indicators[].period", "string (date)", UNITS["period"], "The period of the value."),
        ("indicators[].period_type", "string", "", "month, quarter, rolling_12m or year."),
        *((f"indicators[].{name}", kind, unit, meaning) for name, kind, unit, meaning in _ROW_FIELDS),
        ("indicators[].file", "string or null", "", "The indicator file of this level (null for England)."),
    )),
    ("indicators/<level>/<ID>.json", (
        ("indicator", "object", "", "`id`, `title`, `short_title`, `unit`, `improvement_direction`, `themes` "
         "as in index.json."),
        ("level", "string", "", "Organisation level id."),
        ("label", "string", "", "The level in words."),
        ("period", "string (date)", UNITS["period"], "The period of every row."),
        ("period_type", "string", "", "month, quarter, rolling_12m or year."),
        ("page", "string or null", "", "The indicator page, relative to the site root."),
        ("distribution.organisations", "integer", "organisations", "Organisations of the level."),
        ("distribution.organisations_with_value", "integer", "organisations",
         "Organisations with a value (the deciles are of these)."),
        *(_field(f"distribution.{c}", "number or null") for c in DISTRIBUTION),
        ("organisations[].code", "string", "", "Organisation code."),
        ("organisations[].name", "string", "", "Organisation name."),
        ("organisations[].parent_code", "string or null", "", "Code of its parent organisation."),
        *((f"organisations[].{name}", kind, unit, meaning) for name, kind, unit, meaning in _ROW_FIELDS),
        ("organisations[].file", "string", "", "The organisation file."),
        ("organisations[].page", "string or null", "", "The organisation's page, relative to the site root."),
    )),
)


def _table(rows) -> list[str]:
    lines = ["| Field | Type | Unit | Meaning |", "|---|---|---|---|"]
    for name, kind, unit, meaning in rows:
        cell = meaning.replace("|", "\\|")
        lines.append(f"| `{name}` | {kind} | {unit or '–'} | {cell} |")
    return lines + [""]


def schema_markdown(heading: int = 2, base_url: str = "https://example.org/moopt-site",
                    for_site: bool = False) -> str:
    """The file layout, every field with its unit and meaning, and examples (Markdown).

    The body of ``docs/file-api.md`` and (``for_site``: code blocks as keyboard-reachable
    HTML) of the site's API page. ``heading`` is the level of the top headings;
    ``base_url`` stands for the site's address in the examples.
    """
    from moopt.site.markdown import raw_html_block

    h = "#" * heading

    def code(language: str, label: str, *text: str) -> str:
        if not for_site:
            return f"```{language}\n" + "\n".join(text) + "\n```"
        # On the site a code block is a labelled region reachable by keyboard: at phone width
        # its long lines scroll (axe: scrollable-region-focusable).
        return raw_html_block(f'<pre class="moopt-code" tabindex="0" role="region" '
                              f'aria-label="{html.escape(label, quote=True)}"><code>'
                              f'{html.escape(chr(10).join(text), quote=False)}</code></pre>').rstrip("\n")

    lines = [
        f"{h} Files",
        "",
        "Every path below is under `api/v1/` of the site. Paths inside the files (`file`, `files`) are "
        "relative to that folder; `page` paths are relative to the site root.",
        "",
        code("text", "The file layout",
             "api/v1/index.json                          the run, levels, indicators and organisations",
             "api/v1/organisations/<level>/<code>.json   one organisation: every indicator's latest value",
             "api/v1/indicators/<level>/<ID>.json        one indicator: every organisation of a level"),
        "",
        "Levels are `england`, `region`, `icb`, `sub_icb`, `pcn` and `practice` (and `group` for a run's "
        "own groups of practices): those of the bulk downloads. Practices have files only when the run "
        "builds practice pages (or is a practice-level run): some 6,200 practices would add about 180 MB to "
        "a national site. England has an organisation file but no indicator files (it is one row).",
        "",
        f"{h} What the numbers are",
        "",
        "- The rows are those of the bulk download `downloads/moopt-results-latest.csv`: for each "
        "indicator, its latest period of the period type its pages compare on (the 12 months to the "
        "run's last month for prescribing indicators; the supplied period for others). The field names "
        "are the CSV's column names, so the two join on `indicator_id`/`id`, `org_level`/`level` and "
        "`org_code`/`code`.",
        f"- Numbers are rounded exactly as in the CSV: {SIGNIFICANT_FIGURES} significant figures, never "
        "fewer than the whole-number digits (12345678.9 is 12345679.0). They were calculated before "
        "rounding.",
        "- A missing number is `null`, never NaN: e.g. no value where the denominator is 0, no interval "
        "for ADQs and costs, no verdict where `not_compared_reason` says why.",
        "- Dates are `YYYY-MM-DD`; a `period` is the first day of the period's last month.",
        "- The verdict is the one comparison with England the pages show: the organisation's place in "
        "the funnel of its level (England's value with 99.8% limits allowing for overdispersion). "
        "Variation is a prompt for discussion, not a judgement.",
        "- Keys come in the order listed here. Indicators are sorted by id; organisations by code within "
        "a level, and in index.json by level from England down. "
        "The files hold no build time: the same results give the same bytes.",
        "",
        f"{h} Fields",
        "",
    ]
    for file, rows in FIELDS:
        shown = file if file == "Every file" else f"`{file}`"
        lines += [f"{h}# {shown}", "", *_table(rows)]
    lines += [
        "`trend` and `spc` (both files) hold these stored fields, or are null:", "",
        "- `trend`: " + ", ".join(f"`{c}`" for c in TREND_COLUMNS) + ";",
        "- `spc`: " + ", ".join(f"`{c}`" for c in SPC_COLUMNS) + ".",
        "",
        f"{h} Examples",
        "",
        f"Replace `{base_url}` by the site's address (or read the files from a folder: the paths are the same).",
        "",
        "With `curl`, one organisation's file, pretty-printed:",
        "",
        code("sh", "Example: curl",
             f"curl -s {base_url}/api/v1/organisations/sub_icb/00L.json | python -m json.tool"),
        "",
        "With the Python standard library, every organisation that differs from England on one indicator:",
        "",
        code("sh", "Example: Python's standard library",
             "python -c \"import json, urllib.request; "
             f"d = json.load(urllib.request.urlopen('{base_url}/api/v1/indicators/sub_icb/AMR01.json')); "
             "print([(o['code'], o['value'], o['verdict']) for o in d['organisations'] "
             "if o['comparison_99_8'] not in (None, 'similar')])\""),
        "",
        "With pandas, an indicator file as a table (trend and SPC fields become `trend.change_per_year`, "
        "`spc.variation_icon`...), and the index's organisations:",
        "",
        code("python", "Example: pandas",
        "import json, urllib.request",
        "import pandas as pd",
        "",
        f"base = '{base_url}/api/v1/'",
        "amr01 = json.load(urllib.request.urlopen(base + 'indicators/sub_icb/AMR01.json'))",
        "table = pd.json_normalize(amr01['organisations'])",
        "print(table[['code', 'name', 'value', 'lower_95', 'upper_95', 'verdict']])",
        "",
        "index = json.load(urllib.request.urlopen(base + 'index.json'))",
        "orgs = pd.json_normalize(index['organisations'])",
        "one = json.load(urllib.request.urlopen(base + orgs.loc[0, 'file']))",
        "print(pd.json_normalize(one['indicators'])[['id', 'value', 'england_value', 'verdict']])"),
        "",
    ]
    return "\n".join(lines)


def docs_markdown() -> str:
    """``docs/file-api.md``: generated by ``python -m moopt.site.file_api > docs/file-api.md``."""
    return "\n".join([
        "# The static JSON file API",
        "",
        "Generated from `src/moopt/site/file_api.py` by `python -m moopt.site.file_api > docs/file-api.md`; "
        "do not edit by hand. Every built site has, beside its pages and the bulk downloads "
        "(`downloads/moopt-results-latest.csv`, `.parquet`), a JSON file per organisation and per "
        "indicator under `api/v1/`: static files, so any web server (or a folder) serves them, and a "
        "script reads one organisation or one indicator without downloading the whole table. The site "
        "documents them on its page `api.html`, linked from the downloads page.",
        "",
        schema_markdown(),
        "## Size and build time",
        "",
        "Measured with `python benchmarks/bench_file_api.py --store <store>` on two cores (shared with other "
        "work, so wall-clock times are high; CPU seconds are steadier):",
        "",
        "| store | files | MB | CPU s | reading, s (wall) | writing, s (wall) | nothing changed, s |",
        "|---|---|---|---|---|---|---|",
        "| small synthetic set (6 sub-ICB locations, 25 PCNs) | 197 | 1.4 | 0.3 | 0.8 | 0.4 | 0.3 |",
        "| national synthetic set (106 sub-ICB locations, 1,261 PCNs) | 1,577 | 43.5 | 5.2 | 13.5 | 8.9 | 1.3 |",
        "| the same with practice files (6,214 practices) | 7,826 | 224.0 | 17.5 | 31.9 | 30.2 | 1.7 |",
        "",
        "PCN files are most of the national 43.5 MB (23 MB of organisation files, 17 MB of indicator "
        "files). A build reads the store while its pages render, so only the writing adds to its time; "
        "when the results, levels, definitions, title, version and pages are those of the last site, the "
        "files are hard-linked from it instead (the last column).",
        "",
    ])


API_PAGE = ("JSON files for each organisation and indicator", "api.html")


def downloads_section_markdown() -> str:
    """A section for the downloads page that points to the file API and its documentation."""
    return "\n".join([
        "",
        f"## {API_PAGE[0]}",
        "",
        "The same latest results as one small JSON file per organisation and per indicator, for "
        f"scripts and other tools: [the index (api/v1/index.json)]({API_DIR}/{INDEX_FILE}) lists them all; "
        f"[the file API's page]({API_PAGE[1]}) describes every file and field, with examples.",
        "",
    ])


def api_page_markdown(stored_levels, download_levels, page_levels) -> str:
    """The body of the site's API page (:data:`API_PAGE`): this run's levels, then the schema.

    The levels come from :func:`api_levels`, as the files :func:`write_file_api` writes.
    """
    levels = api_levels(stored_levels, download_levels, page_levels)
    with_indicator_files = indicator_file_levels(levels)

    def words(chosen) -> str:
        return ", ".join(ORG_LEVEL_LABELS.get(level, level) for level in sorted(chosen, key=_level_rank)) or "none"

    lines = [
        "Every organisation and every indicator of this run as a JSON file, for scripts and other "
        "tools: the numbers of the bulk CSV, one organisation or one indicator at a time. Start from "
        f"[the index (api/v1/index.json)]({API_DIR}/{INDEX_FILE}).",
        "",
        f"In this run, organisation files at these levels: {words(levels)}; indicator files at: "
        f"{words(with_indicator_files)}."
        + ("" if PRACTICE_LEVEL in levels or PRACTICE_LEVEL not in set(stored_levels) else
           " Practices have no files: this run's pages do not include practices."),
        "",
        schema_markdown(for_site=True),
    ]
    return "\n".join(lines)


# --- reading -------------------------------------------------------------------------------------------

def _clean(value):
    """A JSON-safe value: None for NaN and infinities, ISO text for dates."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _finite(expression: str) -> str:
    """SQL: ``expression`` where it is a finite number, else NULL (JSON has no NaN)."""
    return f"CASE WHEN isfinite({expression}) THEN {expression} END"


def _select(columns) -> str:
    """SQL selecting ``columns`` of the results table as the files hold them: doubles rounded as the
    bulk CSV rounds them (and NULL where not finite), dates as ISO text."""
    types = {c.name: c.type for c in TABLES[RESULTS_TABLE].columns}
    parts = []
    for column in columns:
        if types[column] == "DOUBLE":
            expression = _finite(rounded(column))
        elif types[column] == "DATE":
            expression = f"strftime(\"{column}\", '%Y-%m-%d')"
        else:
            expression = f'"{column}"'
        parts.append(f'{expression} AS "{column}"')
    return ", ".join(parts)


def _latest_rows(con: duckdb.DuckDBPyConnection, chosen, levels) -> list[dict]:
    """Every latest row at ``levels`` with its trend and SPC series, in the files' form."""
    latest = chosen.narrowed(levels).latest_sql(_select(_LATEST))
    joins, extra = [], []
    if table_exists(con, "trends"):
        joins.append("LEFT JOIN trends AS t USING (indicator_id, org_level, org_code)")
        # Bare names in the rounding SQL: they are unique to the trends table.
        extra += [_finite(rounded(c)) if c.startswith("change") else f"t.{c}" for c in TREND_COLUMNS]
    else:
        extra += ["NULL"] * len(TREND_COLUMNS)
    if table_exists(con, "spc_series"):
        joins.append("LEFT JOIN spc_series AS s USING (indicator_id, org_level, org_code)")
        extra += [f"strftime(s.{c}, '%Y-%m-%d')" if c == "last_period" else f"s.{c}" for c in SPC_COLUMNS]
    else:
        extra += ["NULL"] * len(SPC_COLUMNS)
    names = [*_LATEST, *TREND_COLUMNS, *SPC_COLUMNS]
    sql = (f"SELECT {', '.join(f'l.{chr(34)}{c}{chr(34)}' for c in _LATEST)}, "
           f"{', '.join(f'{e} AS {n}' for e, n in zip(extra, (*TREND_COLUMNS, *SPC_COLUMNS)))} "
           f"FROM ({latest}) AS l {' '.join(joins)} ORDER BY l.indicator_id, l.org_level, l.org_code")
    return [dict(zip(names, row)) for row in con.execute(sql).fetchall()]


def _identities(con: duckdb.DuckDBPyConnection, levels, period_end: str | None) -> list[dict]:
    """Code, name and parents of the organisations at ``levels`` (levels without files, for the
    children lists): those with results in the level's latest period up to the run's last month.

    A cheap stand-in for the latest rows of every indicator, which at practice level would
    read six million rows to list six thousand practices.
    """
    if not levels:
        return []
    columns = _IDENTITY[1:]
    marks = ", ".join("?" for _ in levels)
    up_to = "AND period <= CAST(? AS DATE)" if period_end else ""
    rows = con.execute(
        f"WITH latest AS (SELECT org_level, max(period) AS period FROM {RESULTS_TABLE} "
        f"WHERE org_level IN ({marks}) {up_to} GROUP BY org_level) "
        f"SELECT {', '.join('r.' + c for c in columns[:2])}, {', '.join(f'min(r.{c})' for c in columns[2:])} "
        f"FROM {RESULTS_TABLE} AS r JOIN latest USING (org_level, period) GROUP BY ALL ORDER BY 1, 2",
        [*levels, *([period_end] if period_end else [])]).fetchall()
    return [dict(zip(columns, row)) for row in rows]


@dataclass
class ApiData:
    """What the files are made of, read from the store in one go."""

    levels: tuple[str, ...]
    stored_levels: frozenset
    rows: list[dict]
    others: list[dict]
    run: dict
    results_key: str
    has_rows: bool = True


def read_api_data(store_path: Path, page_levels=(), rows: bool = True) -> ApiData | None:
    """Read what :func:`write_file_api` writes from the store; None without a store or results.

    ``rows=False`` reads only what the files' stamp needs (levels, results key), not the rows.

    Raises
    ------
    RuntimeError
        When the stored results table's columns differ from the contract in :mod:`moopt.tables`.
    """
    store_path = Path(store_path)
    if not store_path.is_file():
        return None
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        if not table_exists(con, RESULTS_TABLE):
            return None
        check_columns(con, RESULTS_TABLE)
        chosen = selection(con)
        stored = frozenset(r[0] for r in con.execute(f"SELECT DISTINCT org_level FROM {RESULTS_TABLE}").fetchall())
        levels = api_levels(stored, chosen.levels, page_levels)
        facts = stored_run_facts(con)
        run = {"period_start": None, "period_end": chosen.period_end, "synthetic": None}
        if table_exists(con, "run_facts"):
            names = {r[0] for r in con.execute("DESCRIBE run_facts").fetchall()}
            wanted = [n for n in ("period_start", "synthetic") if n in names]
            found = con.execute(f"SELECT {', '.join(wanted)} FROM run_facts").fetchone() if wanted else None
            run.update({k: _clean(v) for k, v in zip(wanted, found or ())})
        return ApiData(levels=levels, stored_levels=stored, rows=_latest_rows(con, chosen, levels) if rows else [],
                       others=_identities(con, sorted(stored - set(levels)), chosen.period_end) if rows else [],
                       run=run, results_key=facts.get("results_key") or "", has_rows=rows)
    finally:
        con.close()


# --- writing -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileApi:
    """What :func:`write_file_api` wrote: levels, files, bytes, and whether they were reused."""

    levels: tuple[str, ...]
    organisation_files: int
    indicator_files: int
    bytes: int
    reused: bool = False

    @property
    def files(self) -> int:
        return self.organisation_files + self.indicator_files + 1


def _dumps(document: dict) -> str:
    # allow_nan=False: a NaN that slipped past the SQL fails the build instead of writing invalid JSON.
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


def _parent(level: str, row: dict, stored) -> tuple[str, str] | None:
    """The nearest organisation above ``row`` in the hierarchy: (level, code)."""
    if level not in ORG_LEVELS or level == "england":
        return None  # England has none; a run's own groups are outside the hierarchy
    above = ORG_LEVELS[ORG_LEVELS.index(level) + 1:]
    for parent_level, column in PARENT_COLUMNS:
        if parent_level in above and row.get(column):
            return parent_level, row[column]
    return ("england", ENGLAND_CODE) if "england" in stored else None


def _trend(row: dict) -> dict | None:
    if all(row[c] is None for c in TREND_COLUMNS):
        return None
    return {c: row[c] for c in TREND_COLUMNS}


def _spc(row: dict) -> dict | None:
    if all(row[c] is None for c in SPC_COLUMNS):
        return None
    return {c: row[c] for c in SPC_COLUMNS}


def _measures(row: dict) -> dict:
    """The fields every file gives of one organisation's row, in the documented order."""
    out = {c: row[c] for c in ROW_NUMBERS}
    out.update({c: row[c] for c in ROW_VERDICT})
    out["verdict"] = verdict_words(row)
    out["trend"] = _trend(row)
    out["spc"] = _spc(row)
    return out


def _indicator_facts(indicator_id: str, definitions: dict, theme_titles: dict, stored_direction) -> dict:
    ind = definitions.get(indicator_id)
    if ind is None:  # an older store's indicator: listed, without a definition to describe it
        return {"id": indicator_id, "title": None, "short_title": None, "unit": None,
                "improvement_direction": stored_direction, "themes": []}
    return {"id": ind.id, "title": ind.title, "short_title": ind.short_title, "unit": ind.unit,
            "improvement_direction": ind.improvement_direction,
            "themes": [{"id": ind.theme, "title": theme_titles.get(ind.theme, ind.theme)}]}


def _existing_pages(site_dir: Path) -> set[str]:
    """Site-root-relative URLs of the organisation and indicator pages the site has."""
    found = {p.relative_to(site_dir).as_posix() for p in site_dir.glob("orgs/*/*/index.html")}
    return found | {p.relative_to(site_dir).as_posix() for p in site_dir.glob("indicators/*/*.html")}


def _site_pages(outputs) -> set[str]:
    """The organisation and indicator pages among a site's page URLs (what the files link to)."""
    return {url for url in outputs
            if (url.startswith("orgs/") and url.endswith("/index.html") and url.count("/") == 3)
            or (url.startswith("indicators/") and url.endswith(".html") and url.count("/") == 2)}


def _stamp(data: ApiData, title: str, moopt_version: str, pages: set[str]) -> str:
    """What the files depend on: results, levels, schema and code, definitions, title, version, pages.

    Empty (never reused) when the results' origin is unknown.
    """
    import hashlib

    from moopt.indicators.definitions import load_indicators, load_themes

    if not data.results_key:
        return ""
    digest = hashlib.sha256()
    for module in ("file_api.py", "downloads.py", "indicator_pages.py"):  # schema, rows, rounding, verdicts
        digest.update(Path(__file__).with_name(module).read_bytes())
    described = [(i.id, i.title, i.short_title, i.unit, i.improvement_direction, i.theme) for i in load_indicators()]
    digest.update(json.dumps([described, [(t.id, t.title) for t in load_themes()]]).encode())
    digest.update(json.dumps([data.results_key, data.levels, sorted(data.stored_levels), title, moopt_version,
                              sorted(pages)]).encode())
    return digest.hexdigest()


def _reuse_previous(previous_site: Path | None, api_root: Path, stamp: str) -> FileApi | None:
    """Hard-link the previous site's files when they were made from the same inputs (its stamp).

    A build writes new files rather than changing old ones, so a link is safe; where links
    are not possible (another file system) the files are copied.
    """
    if previous_site is None or not stamp:
        return None
    previous = Path(previous_site) / API_DIR
    stamp_file = previous / STAMP_FILE
    if not _previous_stamp_matches(previous_site, stamp):
        return None
    summary = json.loads(stamp_file.read_text(encoding="utf-8").split("\n", 1)[1])
    sources = [p for p in sorted(previous.rglob("*")) if p.is_file()]
    if len(sources) != summary["files"] + 1:  # every file and the stamp, or the copy is incomplete
        return None
    for source in sources:
        link_file(source, api_root / source.relative_to(previous))
    return FileApi(levels=tuple(summary["levels"]), organisation_files=summary["organisation_files"],
                   indicator_files=summary["indicator_files"], bytes=summary["bytes"], reused=True)


def _previous_stamp_matches(previous_site: Path | None, stamp: str) -> bool:
    stamp_file = Path(previous_site) / API_DIR / STAMP_FILE if previous_site is not None else None
    return bool(stamp) and stamp_file is not None and stamp_file.is_file() and \
        stamp_file.read_text(encoding="utf-8").startswith(stamp + "\n")


def read_api_data_if_changed(store_path: Path, page_levels, *, title: str, moopt_version: str,
                             pages: set[str], previous_site: Path | None) -> ApiData | None:
    """:func:`read_api_data`, without the rows when the previous site's files can be reused.

    For a build that reads while its pages render: ``pages`` are the site-root-relative
    URLs of the pages it is rendering, as :func:`write_file_api` will be given them.
    """
    data = read_api_data(store_path, page_levels, rows=False)
    if data is None or _previous_stamp_matches(previous_site, _stamp(data, title, moopt_version, pages)):
        return data
    return read_api_data(store_path, page_levels)


def write_file_api(store_path: Path, site_dir: Path, *, title: str = "", moopt_version: str = "",
                   page_levels=(), previous_site: Path | None = None, data: ApiData | None = None,
                   pages: set[str] | None = None) -> FileApi | None:
    """Write the JSON file API under ``site_dir/api/v1/`` from the run's store.

    Parameters
    ----------
    store_path : Path
        The run's store (``outputs/store/moopt.duckdb``), opened read-only.
    site_dir : Path
        The site root being built, its pages already rendered (the files link to the
        organisation and indicator pages that exist). JSON files under its ``api/v1/``
        that this call does not write are removed.
    title, moopt_version : str
        The site's title and the moopt version, for ``index.json``.
    page_levels : iterable of str
        Levels the run has organisation pages for: practice files are written only
        when it includes practice (or the run is a practice-level run).
    previous_site : Path, optional
        The site being replaced: its files are reused (hard-linked) when its stamp
        (:data:`STAMP_FILE`: the results key, levels, schema, definitions, title,
        version and pages) matches.
    data : ApiData, optional
        :func:`read_api_data` of the same store and ``page_levels``, when already read
        (a build reads it while the pages render).
    pages : set of str, optional
        Site-root-relative URLs of the site's pages; by default the organisation and
        indicator pages found in ``site_dir``.

    Returns
    -------
    FileApi or None
        Levels, numbers of files and bytes, and whether they were reused; None without
        a store or results.

    Raises
    ------
    RuntimeError
        When the stored results table's columns differ from the contract in :mod:`moopt.tables`.
    """
    from moopt.indicators.definitions import load_indicators, load_themes

    site_dir = Path(site_dir)
    if data is None:  # first what the stamp needs: an unchanged run reads no rows
        data = read_api_data(store_path, page_levels, rows=False)
    if data is None:
        return None
    api_root = site_dir / API_DIR
    pages = _existing_pages(site_dir) if pages is None else _site_pages(pages)
    stamp = _stamp(data, title, moopt_version, pages)
    if not (api_root.exists() and any(api_root.iterdir())):  # reuse only into an empty folder
        reused = _reuse_previous(previous_site, api_root, stamp)
        if reused is not None:
            return reused
    if not data.has_rows:
        data = read_api_data(store_path, page_levels)

    definitions = {ind.id: ind for ind in load_indicators()}
    theme_titles = {t.id: t.title for t in load_themes()}
    written: set[Path] = set()
    total_bytes = 0

    def write(relative: str, document: dict) -> None:
        nonlocal total_bytes
        text = _dumps({"schema_version": SCHEMA_VERSION, **document})
        path = api_root / relative
        # Thousands of small files, inside a site folder swapped into place when complete:
        # atomic against a crash, without a disk flush each (as the chart downloads).
        write_text_atomic(path, text, durable=False)
        written.add(path)
        total_bytes += len(text.encode("utf-8"))

    def page(url: str) -> str | None:
        return url if url in pages else None

    rows, stored = data.rows, data.stored_levels
    # Organisations (written levels, then the others for children lists) and their parents.
    orgs: dict[tuple[str, str], dict] = {}
    for row in rows:
        orgs.setdefault((row["org_level"], row["org_code"]), row)
    identity = {**{(r["org_level"], r["org_code"]): r for r in data.others}, **orgs}
    parents = {key: _parent(key[0], row, stored) for key, row in identity.items()}
    children: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key in sorted(identity, key=lambda k: (_level_rank(k[0]), k[1])):
        if parents[key] in identity:
            children.setdefault(parents[key], []).append(key)
    org_pages = {key: page(org_index_url(*key)) for key in orgs}

    def org_ref(key: tuple[str, str]) -> dict:
        return {"level": key[0], "code": key[1], "name": identity[key]["org_name"],
                "file": organisation_file(*key) if key in orgs else None}

    indicator_levels = indicator_file_levels(data.levels)
    by_indicator: dict[str, list[dict]] = {}
    by_org: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        by_indicator.setdefault(row["indicator_id"], []).append(row)
        by_org.setdefault((row["org_level"], row["org_code"]), []).append(row)
    indicator_facts = {i: _indicator_facts(i, definitions, theme_titles, found[0]["improvement_direction"])
                       for i, found in by_indicator.items()}
    measures = {id(row): _measures(row) for row in rows}

    for key in sorted(orgs):
        level, code = key
        parent = parents[key]
        entries = []
        for row in by_org[key]:
            described = indicator_facts[row["indicator_id"]]
            entries.append({
                "id": row["indicator_id"], "unit": described["unit"],
                "improvement_direction": described["improvement_direction"],
                "period": row["period"], "period_type": row["period_type"], **measures[id(row)],
                "file": indicator_file(level, row["indicator_id"]) if level in indicator_levels else None,
            })
        write(organisation_file(level, code), {
            "organisation": {
                "level": level, "label": ORG_LEVEL_LABELS.get(level, level), "code": code,
                "name": orgs[key]["org_name"], "page": org_pages[key],
                "parent": org_ref(parent) if parent in identity else None,
                "children": [org_ref(child) for child in children.get(key, [])],
            },
            "period_end": data.run["period_end"],
            "indicators": entries,
        })

    indicator_index = []
    for indicator_id in sorted(by_indicator):
        found = by_indicator[indicator_id]
        files, indicator_pages_found = {}, {}
        for level in indicator_levels:
            members = [r for r in found if r["org_level"] == level]
            if not members:
                continue
            first = members[0]
            files[level] = indicator_file(level, indicator_id)
            indicator_pages_found[level] = page(indicator_page_url(level, indicator_id))
            distribution = {"organisations": len(members),
                            "organisations_with_value": sum(r["value"] is not None for r in members)}
            distribution.update({c: first[c] for c in DISTRIBUTION})
            write(files[level], {
                "indicator": indicator_facts[indicator_id], "level": level,
                "label": ORG_LEVEL_LABELS.get(level, level), "period": first["period"],
                "period_type": first["period_type"], "page": indicator_pages_found[level],
                "distribution": distribution,
                "organisations": [{
                    "code": r["org_code"], "name": r["org_name"],
                    "parent_code": (parents[(level, r["org_code"])] or (None, None))[1], **measures[id(r)],
                    "file": organisation_file(level, r["org_code"]), "page": org_pages[(level, r["org_code"])],
                } for r in members],
            })
        indicator_index.append({**indicator_facts[indicator_id], "period": found[0]["period"],
                                "period_type": found[0]["period_type"], "files": files,
                                "pages": indicator_pages_found})

    counts = {level: sum(1 for key in orgs if key[0] == level) for level in data.levels}
    levels = tuple(level for level in sorted(data.levels, key=_level_rank) if counts[level])
    write(INDEX_FILE, {
        "run": {"title": title, "period_start": data.run["period_start"], "period_end": data.run["period_end"],
                "synthetic": data.run["synthetic"], "results_key": data.results_key or None,
                "moopt_version": moopt_version, "significant_figures": SIGNIFICANT_FIGURES,
                "bulk_csv": LATEST_CSV_FILE},
        "levels": [{"level": level, "label": ORG_LEVEL_LABELS.get(level, level), "organisations": counts[level],
                    "indicator_files": level in indicator_levels} for level in levels],
        "indicators": indicator_index,
        "organisations": [{"level": key[0], "code": key[1], "name": orgs[key]["org_name"],
                           "parent_level": (parents[key] or (None, None))[0],
                           "parent_code": (parents[key] or (None, None))[1],
                           "file": organisation_file(*key), "page": org_pages[key]}
                          for key in sorted(orgs, key=lambda k: (_level_rank(k[0]), k[1]))],
    })
    result = FileApi(levels=levels, organisation_files=len(orgs),
                     indicator_files=sum(len(entry["files"]) for entry in indicator_index), bytes=total_bytes)
    _remove_stale(api_root, written)
    if stamp:  # last: a stamp vouches for a complete set of files
        summary = {"files": result.files, "levels": list(levels), "organisation_files": result.organisation_files,
                   "indicator_files": result.indicator_files, "bytes": result.bytes}
        write_text_atomic(api_root / STAMP_FILE, stamp + "\n" + json.dumps(summary) + "\n", durable=False)
    return result


def _remove_stale(api_root: Path, written: set[Path]) -> None:
    """Delete files a former write left in ``api_root`` that this one did not write (its stamp too)."""
    for path in api_root.rglob("*"):
        if path.is_file() and path not in written:
            path.unlink()


def _level_rank(level: str) -> int:
    """Largest level first (England, region, ... practice), groups last."""
    return len(ORG_LEVELS) - ORG_LEVELS.index(level) if level in ORG_LEVELS else len(ORG_LEVELS) + 1


if __name__ == "__main__":  # python -m moopt.site.file_api > docs/file-api.md
    sys.stdout.write(docs_markdown())
