"""Write the Quarto website project for one run (``out/quarto/``).

The project is the single description of the site. ``quarto render`` turns
it into HTML where Quarto is installed; moopt's built-in renderer
(:mod:`moopt.site.render`) reads the very same page files otherwise, so the
two sites show the same content.

Layout of ``out/quarto/``::

    _quarto.yml               base settings (repo-root _quarto.yml) + generated navigation
    _moopt_site.json          page list, titles and breadcrumbs for the built-in renderer
    index.qmd                 England overview, themes, organisations
    orgs/index.qmd            every organisation with links to its theme pages
    orgs/<level>/<code>/index.qmd
    orgs/<level>/<code>/<theme>.ipynb   executed notebook (prepared, see moopt.site.notebooks)
    orgs/<level>/<code>/<theme>.qmd     in its place when the notebook failed
    themes/index.qmd, themes/<theme>.qmd
    about.qmd
    <section>.qmd + <extra page paths>  pages listed in manifest["extra_pages"]
    csv/...                   chart downloads (published via project resources)

Why the notebooks are not executed again: Quarto does not execute ``.ipynb``
cells when rendering unless asked to (``--execute`` or ``execute: enabled:
true``; quarto-web ``docs/computations/_jupyter-execute.md``, and
quarto-dev/quarto-cli issue #5376 on the ``enabled`` option). The base
config sets ``execute: enabled: false`` anyway so that no project-level
setting can switch execution on. ``freeze`` only decides whether code is
*re-executed* during a whole-project render
(https://quarto.org/docs/projects/code-execution), so with nothing executed
there is nothing to freeze; the generated ``.qmd`` pages have no code cells
at all (they use Quarto's Markdown engine, which never starts a kernel).
"""

from __future__ import annotations

import copy
import json
import shutil
from datetime import datetime
from pathlib import Path, PurePosixPath

import nbformat
import yaml

from moopt.orgs import ENGLAND_CODE, ENGLAND_NAME, ORG_LEVEL_PLURALS, ORG_LEVELS

from moopt.site.downloads import (
    HISTORY_PARQUET_FILE,
    LATEST_CSV_FILE,
    LATEST_PARQUET_FILE,
    PRACTICE_LEVEL,
    RESULTS_TABLE,
    SIGNIFICANT_FIGURES,
    STORE_FILE,
    ResultsOverview,
    results_overview,
)
from moopt.site import file_api
from moopt.site.files import copy_file, fresh_temp_dir, swap_into_place
from moopt.site.markdown import (
    code_block,
    front_matter,
    html_text,
    md_link,
    md_text,
    raw_html_block,
    split_front_matter,
    split_leading_heading,
)
from moopt.site.indicator_pages import (
    TABLE_SCRIPT_FILE,
    indicator_page_levels,
    indicator_page_url,
    indicator_pages,
)
from moopt.site.notebooks import notebook_fragment, prepare_notebook
from moopt.site.org_lists import ChildRow, children_section, read_child_rows
from moopt.site.theme_overview import overview_table, read_theme_rows
from moopt.site.plan import (
    DIRECTION_LABELS,
    NotebookPage,
    OrgInfo,
    SitePlan,
    group_orgs,
    level_label,
    org_index_url,
    org_theme_url,
    theme_url,
)
from moopt.site.style import TEMPLATE_DIR, render_template

SITE_INFO_FILE = "_moopt_site.json"
# The organisation finder in every page header: its list (a script, so it works from file://,
# where browsers refuse fetch() of local files) and its code (templates/finder.js).
FINDER_INDEX_FILE = "assets/finder-index.js"
FINDER_SCRIPT_FILE = "assets/moopt-finder.js"
BANNER_FILE = "_banner.html"
SCSS_FILE = "nhs.scss"

# The repository's _quarto.yml, found when moopt is installed from a checkout (editable).
REPO_BASE_CONFIG = Path(__file__).resolve().parents[3] / "_quarto.yml"

# Used only when neither a base_config argument nor the repository's _quarto.yml is available.
FALLBACK_BASE_CONFIG: dict = {
    "project": {"type": "website", "output-dir": "../site"},
    "lang": "en-GB",
    "website": {"search": True, "bread-crumbs": True},
    "format": {"html": {"theme": ["cosmo", SCSS_FILE], "toc": True, "notebook-links": False}},
    "execute": {"enabled": False, "echo": False, "warning": False},
}


# --- small helpers ---


def _rel(url: str, depth: int) -> str:
    """A site-root-relative URL seen from a page ``depth`` folders below the root."""
    return "../" * depth + url


def _depth(output: str) -> int:
    return len(PurePosixPath(output).parts) - 1


def readable_time(stamp: str) -> str:
    """ "2026-11-24T08:00:00Z" -> "24 November 2026, 08:00 UTC"; other text is returned as given."""
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except (ValueError, AttributeError, TypeError):
        return stamp
    offset = when.utcoffset()
    zone = "" if offset is None else ("UTC" if not offset else when.strftime("UTC%z"))
    return f"{when.day} {when:%B %Y, %H:%M} {zone}".strip()


def _period_text(period: dict) -> str:
    start, end = period.get("start"), period.get("end")
    if start and end:
        return f"{start} to {end}"
    return str(start or end or "")


def deep_merge(base: dict, extra: dict) -> dict:
    """Merge ``extra`` into a copy of ``base``: nested dicts merge, everything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_base_config(base_config: Path | None = None) -> dict:
    """Read the base Quarto settings.

    Parameters
    ----------
    base_config : Path, optional
        A ``_quarto.yml`` to start from. When it is not given, or does not
        exist (callers pass ``<project dir>/_quarto.yml`` whether or not the
        user's project has one), the repository's ``_quarto.yml`` is used when
        moopt runs from a checkout, else :data:`FALLBACK_BASE_CONFIG`.

    Raises
    ------
    ValueError
        When the file exists but is not a YAML mapping.
    """
    for candidate in (base_config, REPO_BASE_CONFIG):
        if candidate is not None and Path(candidate).is_file():
            path = Path(candidate)
            break
    else:
        return copy.deepcopy(FALLBACK_BASE_CONFIG)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"The base Quarto config {path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ValueError(f"The base Quarto config {path} must be a YAML mapping.")
    return loaded


# --- the page list ---


class _Pages:
    """Collects page files and their registry entries while the project is written."""

    def __init__(self, root: Path):
        self.root = root
        self.entries: list[dict] = []

    def add(
        self,
        source: str,
        title: str,
        nav: str,
        crumbs: list[tuple[str, str | None]],
        kind: str = "markdown",
        text: str | None = None,
        notebook: nbformat.NotebookNode | None = None,
    ) -> dict:
        output = str(PurePosixPath(source).with_suffix(".html"))
        path = self.root / source
        path.parent.mkdir(parents=True, exist_ok=True)
        if notebook is not None:
            nbformat.write(notebook, str(path))
        elif text is not None:
            path.write_text(text, encoding="utf-8")
        entry = {
            "source": source,
            "output": output,
            "title": title,
            "kind": kind,
            "nav": nav,
            "breadcrumbs": [{"label": label, "url": url} for label, url in crumbs],
        }
        self.entries.append(entry)
        return entry


HOME = ("Home", "index.html")
DOWNLOADS = ("Download all results", "downloads.html")
ORGS = ("Organisations", "orgs/index.html")
THEMES = ("Themes", "themes/index.html")


# --- page bodies (Markdown; every data string goes through md_text / md_link) ---


def _notice(kind: str, lines: list[str]) -> str:
    role = ' role="alert"' if kind == "error" else ""
    return "\n".join(
        [
            raw_html_block(f'<div class="moopt-notice moopt-notice--{kind}"{role}>'),
            *lines,
            "",
            raw_html_block("</div>"),
        ]
    )


def _failed_notice(plan: SitePlan, nb: NotebookPage) -> str:
    org = plan.org(nb.org_level, nb.org_code)
    theme = plan.theme(nb.theme)
    return _notice(
        "error",
        [
            "**This page failed to build.**",
            "",
            f"The {md_text(theme.title)} notebook for {md_text(org.label)} did not run to the end, "
            "so its charts and tables are not shown. The error was:",
            "",
            code_block(nb.error or "No error message was recorded."),
        ],
    )


def _org_lines(
    plan: SitePlan, orgs: list[OrgInfo], depth: int, heading: int, with_themes: bool
) -> list[str]:
    lines: list[str] = []
    for region, parents in group_orgs(orgs):
        lines += [f"{'#' * heading} {md_text(region)}", ""]
        for parent, members in parents:
            if parent:
                lines += [f"{'#' * (heading + 1)} {md_text(parent)}", ""]
            for org in members:
                item = f"- {md_link(org.label, _rel(org_index_url(org.level, org.code), depth))}"
                if with_themes:
                    links = []
                    for nb in plan.notebooks_for_org(org.level, org.code):
                        text = plan.theme(nb.theme).title + ("" if nb.ok else " (failed)")
                        links.append(
                            md_link(text, _rel(org_theme_url(org.level, org.code, nb.theme), depth))
                        )
                    if links:
                        item += ": " + " · ".join(links)
                lines.append(item)
            lines.append("")
    return lines


def _orgs_by_level(plan: SitePlan, orgs: list[OrgInfo]) -> list[str]:
    """The organisations page: a section per level, top first, each grouped by region and parent."""
    lines: list[str] = []
    by_level: dict[str, list[OrgInfo]] = {}
    for org in orgs:
        by_level.setdefault(org.level, []).append(org)
    several = len(by_level) > 1
    for level in sorted(by_level, key=_level_rank):
        members = by_level[level]
        heading = 2
        if several:
            plural = ORG_LEVEL_PLURALS.get(level, level)
            lines += [f"## {md_text(plural[:1].upper() + plural[1:])} ({len(members)})", ""]
            heading = 3
        if level == "region":  # grouping regions by region says nothing
            lines += [f"- {md_link(org.label, _rel(org_index_url(org.level, org.code), 1))}"
                      for org in sorted(members, key=lambda o: (o.name, o.code))] + [""]
        else:
            lines += _org_lines(plan, members, 1, heading, with_themes=True)
    return lines


def _theme_lines(plan: SitePlan, depth: int) -> list[str]:
    lines = []
    for theme in plan.themes.values():
        pages = plan.notebooks_for_theme(theme.id)
        failed = sum(not nb.ok for nb in pages)
        count = f"{len(pages)} organisation{'s' if len(pages) != 1 else ''}"
        if failed:
            count += f", {failed} failed to build"
        lines.append(f"- {md_link(theme.title, _rel(theme_url(theme.id), depth))} ({count})")
    return lines + [""]


def _listed_orgs(plan: SitePlan) -> list[OrgInfo]:
    """Organisations that get a page: every one in the run except England, whose page is the
    home page (England gets its own organisation page only if it has theme notebooks)."""
    with_notebooks = {(nb.org_level, nb.org_code) for nb in plan.notebooks}
    keys = set(plan.orgs) | with_notebooks
    return [plan.org(*key) for key in sorted(keys) if key[0] != "england" or key in with_notebooks]


def _index_body(
    plan: SitePlan,
    overview_html: str | None,
    results: ResultsOverview | None = None,
    children: dict[str, list[ChildRow]] | None = None,
    org_pages: dict[tuple[str, str], str] | None = None,
) -> str:
    lines: list[str] = []
    if overview_html is not None:
        lines.append(raw_html_block(overview_html))
    elif plan.overview is not None:
        lines.append(_failed_notice(plan, plan.overview))
    else:
        lines += ["The England overview notebook was not part of this run.", ""]
    lines += ["## Themes", ""] + _theme_lines(plan, 0)
    if results is not None:
        lines += [
            "## Download all results",
            "",
            f"Every indicator for every organisation in this run, latest period "
            f"({results.latest_rows:,} rows) and every period ({results.history_rows:,} rows), "
            f"as CSV or Parquet: {md_link('download all results, with the data dictionary', DOWNLOADS[1])}.",
            "",
        ]
    orgs = _listed_orgs(plan)
    lines += [
        "## Organisations",
        "",
        f"{len(orgs)} organisations have pages: "
        + ", ".join(f"{count} {md_text(ORG_LEVEL_PLURALS.get(level, level))}"
                    for level, count in _level_counts(orgs))
        + ". Type a name or code in the finder above, or "
        f"{md_link('see every organisation, level by level', ORGS[1])}.",
        "",
    ]
    if children:
        lines.append(children_section(ENGLAND_NAME, children, org_pages or {}, "", heading="###"))
    return "\n".join(lines)


def _level_counts(orgs: list[OrgInfo]) -> list[tuple[str, int]]:
    """How many organisations of each level, top level first."""
    counts: dict[str, int] = {}
    for org in orgs:
        counts[org.level] = counts.get(org.level, 0) + 1
    return sorted(counts.items(), key=lambda item: _level_rank(item[0]))


def _level_rank(level: str) -> int:
    # Top (region) first; levels outside the hierarchy (groups) last.
    return -ORG_LEVELS.index(level) if level in ORG_LEVELS else 1


def _org_crumbs(plan: SitePlan, org: OrgInfo, with_pages: set[tuple[str, str]]) -> list[tuple[str, str | None]]:
    """Home, Organisations, then the organisations above ``org`` (linked where they have a page)."""
    crumbs = [HOME, ORGS]
    for level, code, name in org.ancestors:
        crumbs.append((name, org_index_url(level, code) if (level, code) in with_pages else None))
    return crumbs


def _org_body(
    plan: SitePlan,
    org: OrgInfo,
    children: dict[str, list[ChildRow]] | None = None,
    org_pages: dict[tuple[str, str], str] | None = None,
) -> str:
    org_pages = org_pages or {}
    depth = "../../../"
    facts = [
        f"**Organisation level:** {md_text(level_label(org.level))}",
        f"**Code:** {md_text(org.code)}",
    ]
    # Each organisation above, nearest last, linked where it has a page.
    for level, code, name in org.ancestors:
        url = org_pages.get((level, code))
        text = md_link(name, depth + url) if url else md_text(name)
        facts.append(f"**{md_text(level_label(level))}:** {text}")
    if not org.ancestors:  # a manifest of an earlier version, or a group of practices
        if org.parent_name or org.parent_code:
            facts.append(f"**Part of:** {md_text(org.parent_name or org.parent_code)}")
        if (org.region_name or org.region_code) and org.level != "region":
            facts.append(f"**Region:** {md_text(org.region_name or org.region_code)}")
    lines = ["  \n".join(facts), "", "## Theme pages", ""]
    pages = plan.notebooks_for_org(org.level, org.code)
    if not pages:
        lines.append("No theme pages were built for this organisation in this run.")
    for nb in pages:
        theme = plan.theme(nb.theme)
        note = "" if nb.ok else " (this page failed to build)"
        lines.append(f"- {md_link(theme.title, nb.theme + '.html')}{note}")
    lines.append("")
    if children:
        lines.append(children_section(org.name, children, org_pages, depth))
    return "\n".join(lines) + "\n"


def _theme_body(plan: SitePlan, theme_id: str, indicator_links: dict | None = None,
                orgs: list[OrgInfo] | None = None) -> str:
    """A theme's description, its indicators (linking to their indicator pages), the organisations x
    indicators overview of each level with pages, and its pages.

    ``indicator_links`` maps an indicator id to its indicator pages, [(level, url)...].
    """
    theme = plan.theme(theme_id)
    indicator_links = indicator_links or {}
    lines: list[str] = []
    if theme.description.strip():
        # Authored Markdown from the theme definition: keep its formatting, not raw HTML.
        lines += [theme.description.replace("&", "&amp;").replace("<", "&lt;").strip(), ""]
    if theme.indicators:
        lines += [
            "## Indicators",
            "",
            "| Indicator | Title | Better when | Unit | Every organisation |",
            "|---|---|---|---|---|",
        ]
        for ind in theme.indicators:
            direction = DIRECTION_LABELS.get(ind.get("improvement_direction"), "Not stated")
            links = " · ".join(
                md_link(ORG_LEVEL_PLURALS[level][:1].upper() + ORG_LEVEL_PLURALS[level][1:], _rel(url, 1))
                for level, url in indicator_links.get(ind.get("id"), [])
            ) or "–"
            lines.append(
                f"| {md_text(ind.get('id', ''))} | {md_text(ind.get('title', ''))} | "
                f"{md_text(direction)} | {md_text(ind.get('unit', '') or '')} | {links} |"
            )
        lines.append("")
    if theme.indicators and orgs:
        lines += _theme_overview_lines(plan, theme, orgs)
    lines += ["## Pages for each organisation", ""]
    pages = plan.notebooks_for_theme(theme_id)
    if not pages:
        lines.append("No organisation pages were built for this theme in this run.")
    for nb in pages:
        org = plan.org(nb.org_level, nb.org_code)
        note = "" if nb.ok else " (this page failed to build)"
        lines.append(
            f"- {md_link(org.label, _rel(org_theme_url(org.level, org.code, theme_id), 1))}{note}"
        )
    return "\n".join(lines) + "\n"


# A level with more organisations than this gets no overview table (a page of 6,000 practice rows
# helps nobody); its indicator pages list them, sortable and filterable.
OVERVIEW_MAX_ROWS = 500


def _theme_overview_lines(plan: SitePlan, theme, orgs: list[OrgInfo]) -> list[str]:
    by_level: dict[str, list[OrgInfo]] = {}
    for org in orgs:
        if org.level != "england":
            by_level.setdefault(org.level, []).append(org)
    levels = sorted(by_level, key=_level_rank)
    indicators = list(theme.indicators)
    rows = read_theme_rows(plan.out / STORE_FILE, [i.get("id") for i in indicators],
                           [lv for lv in levels if len(by_level[lv]) <= OVERVIEW_MAX_ROWS])
    if rows.empty:
        return []
    lines = ["## Every organisation at a glance", ""]
    for level in levels:
        plural = ORG_LEVEL_PLURALS.get(level, level)
        members = sorted(by_level[level], key=lambda o: (o.name, o.code))
        lines += [f"### {md_text(plural[:1].upper() + plural[1:])}", ""]
        if len(members) > OVERVIEW_MAX_ROWS:
            lines += [f"{len(members):,} {md_text(plural)}: too many for one table here; each indicator's "
                      "page lists them all, sortable and filterable.", ""]
            continue
        table = overview_table(level, members, indicators, rows, theme.title, "../")
        lines += [raw_html_block(f'<section class="moopt-overview">{table}</section>'), ""]
    lines += [raw_html_block(f'<script src="../{TABLE_SCRIPT_FILE}" defer></script>'), ""]
    return lines


def _about_body(plan: SitePlan, results: ResultsOverview | None = None) -> str:
    level = f" ({md_text(level_label(plan.org_level))})" if plan.org_level else ""
    lines = [
        "## What this site is",
        "",
        f"This site shows medicines optimisation indicators for each organisation{level} in "
        "England, each set against national deciles and the national median. It is meant to help "
        "prescribers, pharmacists and commissioners spot variation worth talking about locally. "
        "It is not a league table: an organisation far from the median may have good reasons for "
        "it, and the figures are a starting point for questions, not a verdict.",
        "",
        f"Data period: {md_text(_period_text(plan.period) or 'not recorded')}. "
        f"Built by moopt {md_text(plan.version or 'unknown version')} on "
        f"{md_text(readable_time(plan.generated_at) or 'an unrecorded date')}.",
        "",
        "Every chart has a CSV download of the figures it plots, linked beneath it.",
        "",
    ]
    if results is not None:
        lines += [
            f"The results of this run are downloads, as CSV or Parquet, with a data "
            f"dictionary of their columns: {md_link('download all results', DOWNLOADS[1])}.",
            "",
        ]
    lines += [
        "## Data sources",
        "",
    ]
    if plan.data_description:
        lines += [md_text(plan.data_description), ""]
    if plan.synthetic:
        lines += [
            "**The data on this site are synthetic.** " + md_text(plan.data_notice),
            "",
            "The organisations, codes and figures are generated by moopt to exercise the "
            "dashboards; they are fictional and any likeness to a real organisation is chance.",
            "",
        ]
    if plan.data_sources:
        for source in plan.data_sources:
            if isinstance(source, dict):
                text = md_text(source.get("name", ""))
                if source.get("licence"):
                    text += f" ({md_text(source['licence'])})"
            else:
                text = md_text(source)
            lines.append(f"- {text}")
        lines.append("")
    else:
        lines += [
            "With real data, moopt reads these published sources:",
            "",
            "- English Prescribing Dataset, NHS Business Services Authority "
            "(monthly prescribing by practice)",
            "- Patients Registered at a GP Practice, NHS England (list sizes by age and sex)",
            "- Organisation Data Service reference files "
            "(practices, PCNs, sub-ICB locations, ICBs, regions)",
            "",
            "These are published under the Open Government Licence v3.0.",
            "",
        ]
    lines += [
        "## Accessibility statement",
        "",
        "We want as many people as possible to be able to use this site. It aims to meet the Web "
        "Content Accessibility Guidelines (WCAG) 2.2 at level AA. You should be able to:",
        "",
        "- move through every page with a keyboard alone, starting from the skip link;",
        "- zoom to 400% without losing content;",
        "- read every chart through its text description, and get its figures as a CSV file;",
        "- use the site with a screen reader (pages use headings, landmarks and labelled "
        "navigation).",
        "",
        "Known limits: charts are images, so their detail is in the text description and the CSV "
        "rather than in the picture itself; tables copied from notebooks may be wide on small "
        "screens.",
        "",
    ]
    if plan.contact:
        lines += [f"If you find a problem, please tell us: {md_text(plan.contact)}.", ""]
    else:
        lines += [
            "If you find a problem, please report it to the team that published this site.",
            "",
        ]
    prepared = readable_time(plan.generated_at) or "the date of this build"
    lines += [f"This statement was prepared on {md_text(prepared)}, when the site was built.", ""]
    return "\n".join(lines)


def _downloads_body(plan: SitePlan, results: ResultsOverview) -> str:
    """The bulk downloads and their data dictionary, from the table contract in moopt.tables."""
    from moopt.indicators.definitions import load_indicators
    from moopt.tables import TABLES

    table = TABLES[RESULTS_TABLE]
    levels = md_text(", ".join(level_label(level) for level in ORG_LEVELS if level in results.download_levels))
    practices = PRACTICE_LEVEL in results.levels and PRACTICE_LEVEL not in results.download_levels

    def link(path: str, text: str, note: str) -> str:
        return (f'<li><a href="{path}" download>{html_text(text)} ({PurePosixPath(path).name})</a>'
                f" – {html_text(note)}</li>\n")

    links = (
        '<ul class="moopt-downloads">\n'
        + link(LATEST_CSV_FILE, "Latest results as CSV", f"{results.latest_rows:,} rows; opens in a spreadsheet")
        + link(LATEST_PARQUET_FILE, "Latest results as Parquet",
               "the same rows, smaller and typed, for R, Python or DuckDB")
        + link(HISTORY_PARQUET_FILE, "Every period as Parquet", f"{results.history_rows:,} rows")
        + "</ul>"
    )
    lines = [
        f"The results of this run, one row per {md_text(table.grain)}, in three files with the same "
        f"columns. Data period: {md_text(_period_text(plan.period) or 'not recorded')}.",
        "",
        raw_html_block(links),
        "## What each file holds",
        "",
        f"- **{PurePosixPath(LATEST_CSV_FILE).name}** and **{PurePosixPath(LATEST_PARQUET_FILE).name}** "
        f"hold the same {results.latest_rows:,} rows: what the pages show. That is every organisation "
        f"at each of these levels: {levels}; for every indicator, in its latest period of the period "
        "type its pages compare on (the 12 months to the last month for prescribing indicators, or "
        "the single month when the data cover less than a year; the supplied period for indicators "
        "from other sources).",
        f"- **{PurePosixPath(HISTORY_PARQUET_FILE).name}** holds {results.history_rows:,} rows: the same "
        "levels and indicators in every period and period type (month, quarter, 12 months), for "
        "trends. It is Parquet only (zstd-compressed); as CSV it would be too large to open in a "
        "spreadsheet.",
        (f"- **Practice rows are not in the downloads.** The full table, practices included "
         f"({results.rows:,} rows in this run), is the `{RESULTS_TABLE}` table of the run's store, "
         f"`outputs/{STORE_FILE}` (DuckDB), described with every other table in `docs/tables.md` of "
         "moopt's repository." if practices else
         f"- The full table of this run ({results.rows:,} rows, every level and period) is the "
         f"`{RESULTS_TABLE}` table of the run's store, `outputs/{STORE_FILE}` (DuckDB), described "
         "with every other table in `docs/tables.md` of moopt's repository."),
        "",
        "## How numbers are written",
        "",
        f"- Every number is rounded to {SIGNIFICANT_FIGURES} significant figures, but never to "
        "fewer than its whole-number digits, so counts and pounds keep every digit: 0.000123456789 "
        "is written 0.000123457 and 12345678.9 is written 12345679. The statistics were calculated "
        "before rounding.",
        "- An empty cell is a missing value: for example no value where the denominator is 0, or no "
        "verdict where `not_compared_reason` says why.",
        "- Dates are written YYYY-MM-DD; `period` is the first day of the period's last month.",
        "- In the CSV, text that a spreadsheet would run as a formula starts with an apostrophe.",
        "- Rows are sorted by indicator, level, organisation, period type and period.",
        "",
        "## Data dictionary",
        "",
        f"The columns of every file, in order ({len(table.columns)} columns).",
        "",
        "| Column | Type | Unit | Meaning and method |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {md_text(c.name)} | {md_text(c.type)} | {md_text(c.unit or '–')} | {md_text(c.description)} |"
        for c in table.columns
    ]
    methods = {page.path.stem for page in plan.extra_pages if page.slug == "methodology"}
    definitions = {ind.id: ind for ind in load_indicators()}
    lines += [
        "",
        "## Indicators and their units",
        "",
        "The unit of `value` and the columns measured like it depends on the indicator.",
        "",
        "| Indicator | Title | Unit of value |",
        "|---|---|---|",
    ]
    for ind_id in results.indicator_ids:
        ind = definitions.get(ind_id)
        name = md_link(ind_id, f"methodology/{ind_id}.html") if ind_id in methods else md_text(ind_id)
        title = md_text(ind.title) if ind else "Not in this version's definitions"
        unit = md_text(ind.unit) if ind else "–"
        lines.append(f"| {name} | {title} | {unit} |")
    lines.append("")
    return "\n".join(lines)


def _indicator_theme(plan: SitePlan, indicator_id: str) -> str | None:
    """The theme of the run that lists an indicator, if any."""
    for theme in plan.themes.values():
        if any(ind.get("id") == indicator_id for ind in theme.indicators):
            return theme.id
    return None


def _section_body(plan: SitePlan, slug: str) -> str:
    lines = []
    for page in plan.extra_pages:
        if page.slug == slug:
            lines.append(f"- {md_link(page.title, str(page.path.with_suffix('.html')))}")
    return "\n".join(lines) + "\n"


# --- the organisation finder ---


def finder_index(orgs: list[OrgInfo]) -> dict:
    """Every organisation with a page: code, name, level (id and words) and page URL.

    URLs are relative to the site root; the finder prefixes each page's path to the root.
    """
    return {
        "organisations": [
            {
                "code": org.code,
                "name": org.name,
                "level": org.level,
                "level_label": level_label(org.level),
                "url": org_index_url(org.level, org.code),
            }
            for org in sorted(orgs, key=lambda o: (o.name.lower(), o.level, o.code))
        ]
    }


def finder_index_script(orgs: list[OrgInfo]) -> str:
    """``assets/finder-index.js``: the finder's list as a script setting a global."""
    data = json.dumps(finder_index(orgs), ensure_ascii=True, separators=(",", ":"))
    return (
        "/* Generated by moopt.site: every organisation with a page, for the finder. */\n"
        f"window.MOOPT_FINDER_INDEX = {data};\n"
    )


# --- the whole project ---


def _navigation(plan: SitePlan) -> list[dict]:
    nav = [
        {"label": "Home", "url": "index.html", "key": "home", "source": "index.qmd"},
        {"label": "Organisations", "url": ORGS[1], "key": "orgs", "source": "orgs/index.qmd"},
        {"label": "Themes", "url": THEMES[1], "key": "themes", "source": "themes/index.qmd"},
    ]
    for slug, section in plan.sections().items():
        nav.append(
            {
                "label": section,
                "url": f"{slug}.html",
                "key": f"section:{slug}",
                "source": f"{slug}.qmd",
            }
        )
    nav.append({"label": "About", "url": "about.html", "key": "about", "source": "about.qmd"})
    return nav


def _quarto_config(
    plan: SitePlan, base: dict, pages: list[dict], nav: list[dict], orgs: list[OrgInfo]
) -> dict:
    # Navigation labels and the footer use entity escaping only (html_text): Quarto may show
    # them as Markdown or insert them as HTML, and entities are safe and readable either way.
    footer = html_text(f"Built {readable_time(plan.generated_at)} by moopt {plan.version}")
    sidebar_orgs = [
        {
            "text": html_text(org.label),
            "href": org_index_url(org.level, org.code).replace(".html", ".qmd"),
        }
        for org in sorted(orgs, key=lambda o: (o.name, o.code))
    ]
    sidebar_themes = [
        {"text": html_text(t.title), "href": f"themes/{t.id}.qmd"} for t in plan.themes.values()
    ]
    generated = {
        "project": {
            "type": "website",
            "output-dir": "../site",
            "render": [page["source"] for page in pages],
            "resources": sorted(
                set(base.get("project", {}).get("resources", []) or []) | {"csv/**", "assets/**"}
            ),
        },
        "website": {
            "title": html_text(plan.title),
            "navbar": {
                "left": [{"text": html_text(item["label"]), "href": item["source"]} for item in nav]
            },
            "sidebar": [
                {
                    "style": "docked",
                    "contents": [
                        {"section": "Themes", "contents": sidebar_themes},
                        {"section": "Organisations", "contents": sidebar_orgs},
                    ],
                }
            ],
            "page-footer": {
                "left": footer,
                "right": html_text(f"Data period {_period_text(plan.period)}"),
            },
        },
    }
    config = deep_merge(base, generated)
    if plan.synthetic:
        html = config.setdefault("format", {}).setdefault("html", {})
        before = html.get("include-before-body") or []
        before = [before] if isinstance(before, str) else list(before)
        html["include-before-body"] = [*before, BANNER_FILE]
    return config


def write_project(plan: SitePlan, project_dir: Path, base_config: Path | None = None) -> dict:
    """Write the Quarto project for ``plan`` into ``project_dir`` (replacing it as a whole).

    Parameters
    ----------
    plan : SitePlan
        From :func:`moopt.site.plan.plan_site`.
    project_dir : Path
        Usually ``out/quarto``. Written into a temporary sibling, then swapped into place.
    base_config : Path, optional
        The ``_quarto.yml`` to start from (see :func:`load_base_config`).

    Returns
    -------
    dict
        The site description also written to ``_moopt_site.json``: ``site`` (title,
        notice, navigation...), ``pages`` (one entry per page) and ``missing_csv``.
    """
    project_dir = Path(project_dir)
    base = load_base_config(base_config)
    tmp = fresh_temp_dir(project_dir)
    try:
        info = _write_into(plan, tmp, base)
        swap_into_place(tmp, project_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _write_into(plan: SitePlan, root: Path, base: dict) -> dict:
    pages = _Pages(root)
    results = results_overview(plan.out / STORE_FILE)  # None when the run has no results stage
    csv_wanted: set[str] = set()
    orgs = _listed_orgs(plan)
    nav = _navigation(plan)
    org_pages = {(org.level, org.code): org_index_url(org.level, org.code) for org in orgs}
    children = read_child_rows(plan.out / STORE_FILE)  # the lists down, every page's at once

    # Home: the England overview notebook, pre-rendered to HTML so that a .qmd can hold it.
    overview_html = None
    if plan.overview is not None and plan.overview.ok:
        nb, found = prepare_notebook(
            plan.overview.source,
            "England overview",
            depth=0,
            site_has_banner=plan.synthetic,
            drop_title_heading=False,
        )
        csv_wanted |= found | {str(c) for c in plan.overview.csv}
        overview_html = notebook_fragment(nb)
    pages.add(
        "index.qmd",
        plan.title,
        "home",
        [("Home", None)],
        text=front_matter({"title": md_text(plan.title)})
        + _index_body(plan, overview_html, results, children.get(("england", ENGLAND_CODE)), org_pages),
    )

    pages.add(
        "orgs/index.qmd",
        "Organisations",
        "orgs",
        [HOME, ("Organisations", None)],
        text=front_matter({"title": "Organisations"})
        + "Every organisation in this run, level by level from the top, with links to its theme pages.\n\n"
        + "\n".join(_orgs_by_level(plan, orgs)),
    )

    for org in orgs:
        base_dir = f"orgs/{org.level}/{org.code}"
        org_crumb = (org.name, org_index_url(org.level, org.code))
        up = _org_crumbs(plan, org, set(org_pages))
        pages.add(
            f"{base_dir}/index.qmd",
            org.label,
            "orgs",
            [*up, (org.name, None)],
            text=front_matter({"title": md_text(org.label)})
            + _org_body(plan, org, children.get((org.level, org.code)), org_pages),
        )
        for nb in plan.notebooks_for_org(org.level, org.code):
            theme = plan.theme(nb.theme)
            title = f"{theme.title}: {org.name}"
            crumbs = [*up, org_crumb, (theme.title, None)]
            if nb.ok:
                notebook, found = prepare_notebook(
                    nb.source, title, depth=3, site_has_banner=plan.synthetic
                )
                csv_wanted |= found | {str(c) for c in nb.csv}
                pages.add(
                    f"{base_dir}/{nb.theme}.ipynb",
                    title,
                    "orgs",
                    crumbs,
                    kind="notebook",
                    notebook=notebook,
                )
            else:
                pages.add(
                    f"{base_dir}/{nb.theme}.qmd",
                    title,
                    "orgs",
                    crumbs,
                    text=front_matter({"title": md_text(title)}) + _failed_notice(plan, nb),
                )

    # Indicator pages: every organisation of a level for one indicator (one query each).
    indicator_links: dict[str, list[tuple[str, str]]] = {}
    if results is not None:
        methodology = {
            page.path.stem: str(page.path.with_suffix(".html"))
            for page in plan.extra_pages
            if page.slug == "methodology"
        }
        org_pages = {(org.level, org.code): org_index_url(org.level, org.code) for org in orgs}
        for found in indicator_pages(
            plan.out / STORE_FILE, indicator_page_levels(results.download_levels), org_pages, methodology
        ):
            theme_id = _indicator_theme(plan, found.indicator_id)
            crumbs = [HOME, THEMES]
            if theme_id is not None:
                crumbs.append((plan.theme(theme_id).title, theme_url(theme_id)))
            pages.add(
                found.source,
                found.title,
                "themes",
                [*crumbs, (found.title, None)],
                text=front_matter({"title": md_text(found.title)}) + found.body,
            )
            indicator_links.setdefault(found.indicator_id, []).append(
                (found.level, indicator_page_url(found.level, found.indicator_id))
            )

    pages.add(
        "themes/index.qmd",
        "Themes",
        "themes",
        [HOME, ("Themes", None)],
        text=front_matter({"title": "Themes"}) + "\n".join(_theme_lines(plan, 1)),
    )
    for theme in plan.themes.values():
        pages.add(
            f"themes/{theme.id}.qmd",
            theme.title,
            "themes",
            [HOME, THEMES, (theme.title, None)],
            text=front_matter({"title": md_text(theme.title)})
            + _theme_body(plan, theme.id, indicator_links, orgs),
        )

    for slug, section in plan.sections().items():
        pages.add(
            f"{slug}.qmd",
            section,
            f"section:{slug}",
            [HOME, (section, None)],
            text=front_matter({"title": md_text(section)}) + _section_body(plan, slug),
        )
    for extra in plan.extra_pages:
        meta, body = split_front_matter(extra.source.read_text(encoding="utf-8"))
        # A body opening with "# Heading" names the page: it becomes the one <h1>, not a second.
        heading, body = split_leading_heading(body)
        if heading:
            meta["title"] = md_text(heading)
        meta.setdefault("title", md_text(extra.title))
        pages.add(
            str(extra.path),
            heading or extra.title,
            f"section:{extra.slug}",
            [HOME, (extra.section, f"{extra.slug}.html"), (extra.title, None)],
            text=front_matter(meta) + body,
        )

    if results is not None:
        pages.add(
            "downloads.qmd",
            DOWNLOADS[0],
            "home",
            [HOME, (DOWNLOADS[0], None)],
            text=front_matter({"title": DOWNLOADS[0]}) + _downloads_body(plan, results)
            + file_api.downloads_section_markdown(),
        )
        # The JSON file API (moopt.site.file_api writes its files after rendering).
        pages.add(
            "api.qmd",
            file_api.API_PAGE[0],
            "home",
            [HOME, DOWNLOADS, (file_api.API_PAGE[0], None)],
            text=front_matter({"title": file_api.API_PAGE[0]})
            + file_api.api_page_markdown(results.levels, results.download_levels,
                                         {level for level, _ in plan.orgs}),
        )

    pages.add(
        "about.qmd",
        "About this site",
        "about",
        [HOME, ("About", None)],
        text=front_matter({"title": "About this site"}) + _about_body(plan, results),
    )

    missing = []
    for rel in sorted(csv_wanted):
        source = plan.out / rel
        if source.is_file():
            copy_file(source, root / rel)
        else:
            missing.append(rel)

    (root / SCSS_FILE).write_text(render_template("quarto/nhs.scss.j2"), encoding="utf-8")
    (root / "assets").mkdir(exist_ok=True)
    (root / FINDER_INDEX_FILE).write_text(finder_index_script(orgs), encoding="utf-8")
    copy_file(TEMPLATE_DIR / "finder.js", root / FINDER_SCRIPT_FILE)
    copy_file(TEMPLATE_DIR / "tables.js", root / TABLE_SCRIPT_FILE)
    if plan.synthetic:
        (root / BANNER_FILE).write_text(
            render_template("banner.html.j2", notice=plan.data_notice), encoding="utf-8"
        )
    config = _quarto_config(plan, base, pages.entries, nav, orgs)
    (root / "_quarto.yml").write_text(
        "# Generated by moopt.site from the repository's _quarto.yml; edits here are overwritten.\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1000),
        encoding="utf-8",
    )
    info = {
        "site": {
            "title": plan.title,
            "synthetic": plan.synthetic,
            "data_notice": plan.data_notice,
            "generated_at": plan.generated_at,
            "generated_text": readable_time(plan.generated_at),
            "version": plan.version,
            "period_text": _period_text(plan.period),
            "nav": nav,
        },
        "pages": pages.entries,
        "missing_csv": missing,
    }
    (root / SITE_INFO_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info
