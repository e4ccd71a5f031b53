"""Read a run manifest and turn it into a checked plan of the website's pages.

Everything that later becomes part of a file path (organisation levels and
codes, theme ids, CSV and extra-page paths) is validated here, once, so the
project writer and the renderers can trust the plan.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from moopt.orgs import (
    ENGLAND_CODE,
    ENGLAND_NAME,
    ORG_LEVEL_LABELS,
    check_org_level,
    check_safe_code,
)

# Theme ids become file names; keep them to lower-case letters, digits and "_".
THEME_ID = re.compile(r"^[a-z0-9_]+$")
# One component of a relative path to a CSV download or an extra page.
SAFE_PATH_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
# Section names become the slug of a landing page at the site root.
RESERVED_SLUGS = frozenset({"index", "about", "orgs", "themes", "csv", "assets", "site_libs", "downloads", "indicators"})

OVERVIEW_THEME = "overview"
DEFAULT_TITLE = "Medicines optimisation dashboard"
DEFAULT_SYNTHETIC_NOTICE = (
    "SYNTHETIC DATA: the organisations, codes and figures on this site are generated for "
    "testing and demonstration. They describe no real organisation and must not be used "
    "for decisions."
)

DIRECTION_LABELS = {
    "decrease": "Lower is better",
    "increase": "Higher is better",
    "neutral": "No preferred direction",
}


def check_theme_id(theme_id: str) -> str:
    """Return ``theme_id`` if it is safe to use as a file name, else raise ValueError."""
    if not isinstance(theme_id, str) or not THEME_ID.match(theme_id):
        raise ValueError(
            f"The theme id {theme_id!r} is not usable: theme ids must be lower-case letters, "
            "digits and underscores only."
        )
    return theme_id


def check_relative_path(path: str, what: str, suffixes: tuple[str, ...]) -> PurePosixPath:
    """Return ``path`` as a PurePosixPath if it is a plain relative path, else raise ValueError.

    Parameters
    ----------
    path : str
        A path relative to the outputs folder (or to ``pages/``), using "/".
    what : str
        What the path is, for the error message.
    suffixes : tuple of str
        File name endings that are allowed.
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"The {what} path {path!r} is empty or not text.")
    pure = PurePosixPath(path)
    if pure.is_absolute() or "\\" in path:
        raise ValueError(f"The {what} path {path!r} must be relative and use '/' separators.")
    if not all(SAFE_PATH_PART.match(part) for part in pure.parts):
        raise ValueError(
            f"The {what} path {path!r} is not usable: each part must be letters, digits, "
            "'_', '-' or '.', must not start with '.', and '..' is not allowed."
        )
    if not path.endswith(suffixes):
        raise ValueError(f"The {what} path {path!r} must end with one of {', '.join(suffixes)}.")
    return pure


def slugify_section(section: str) -> str:
    """Return the file-name slug of a navigation section name ("Methodology" -> "methodology")."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(section).lower()).strip("-")
    if not slug:
        raise ValueError(f"The extra-page section {section!r} has no letters or digits.")
    if slug in RESERVED_SLUGS:
        raise ValueError(
            f"The extra-page section {section!r} would clash with the site's own {slug!r} pages."
        )
    return slug


@dataclass(frozen=True)
class OrgInfo:
    """One organisation as the site shows it."""

    level: str
    code: str
    name: str
    parent_code: str | None = None
    parent_name: str | None = None
    region_code: str | None = None
    region_name: str | None = None
    # The organisations above it, top (region) first: (level, code, name).
    ancestors: tuple[tuple[str, str, str], ...] = ()

    @property
    def label(self) -> str:
        """Name with code, e.g. "NHS Example ICB - A1B (A1B)"."""
        return f"{self.name} ({self.code})"


@dataclass(frozen=True)
class ThemeInfo:
    """One theme: its title, Markdown description and indicators."""

    id: str
    title: str
    description: str = ""
    indicators: tuple[dict, ...] = ()


@dataclass(frozen=True)
class NotebookPage:
    """One executed (or failed) notebook and where its page goes."""

    org_level: str
    org_code: str
    theme: str
    source: Path | None  # the executed notebook, None when it is missing
    status: str
    error: str | None
    csv: tuple[PurePosixPath, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the notebook ran and its file exists."""
        return self.status != "failed" and self.source is not None


@dataclass(frozen=True)
class ExtraPage:
    """A Markdown page written under ``out/pages/`` by another part of moopt."""

    path: PurePosixPath
    title: str
    section: str
    slug: str
    source: Path


@dataclass
class SitePlan:
    """Everything the project writer needs, checked."""

    out: Path
    title: str
    synthetic: bool
    data_notice: str
    period: dict
    generated_at: str
    version: str
    org_level: str | None
    orgs: dict[tuple[str, str], OrgInfo]
    themes: dict[str, ThemeInfo]
    notebooks: list[NotebookPage]
    overview: NotebookPage | None
    extra_pages: list[ExtraPage]
    data_sources: list[dict] = field(default_factory=list)
    data_description: str = ""
    contact: str | None = None
    _lookup: tuple[dict, dict] | None = field(default=None, repr=False)

    def org(self, level: str, code: str) -> OrgInfo:
        """Return the organisation, inventing a plain one from its code if the manifest lacks it."""
        key = (level, code)
        if key not in self.orgs:
            name = ENGLAND_NAME if code == ENGLAND_CODE else code
            self.orgs[key] = OrgInfo(level=level, code=code, name=name)
        return self.orgs[key]

    def theme(self, theme_id: str) -> ThemeInfo:
        """Return the theme, inventing a title from its id if the manifest lacks it."""
        if theme_id not in self.themes:
            self.themes[theme_id] = ThemeInfo(id=theme_id, title=theme_id.replace("_", " ").title())
        return self.themes[theme_id]

    def notebooks_for_org(self, level: str, code: str) -> list[NotebookPage]:
        """Notebook pages of one organisation in theme order."""
        return self._index()[0].get((level, code), [])

    def notebooks_for_theme(self, theme_id: str) -> list[NotebookPage]:
        """Notebook pages of one theme, sorted by organisation name."""
        return self._index()[1].get(theme_id, [])

    def _index(self) -> tuple[dict, dict]:
        # Built once: a national practice-level run has tens of thousands of pages.
        if self._lookup is None:
            order = {theme_id: i for i, theme_id in enumerate(self.themes)}
            by_org: dict[tuple[str, str], list[NotebookPage]] = {}
            by_theme: dict[str, list[NotebookPage]] = {}
            for nb in self.notebooks:
                by_org.setdefault((nb.org_level, nb.org_code), []).append(nb)
                by_theme.setdefault(nb.theme, []).append(nb)
            for pages in by_org.values():
                pages.sort(key=lambda nb: (order.get(nb.theme, len(order)), nb.theme))
            for pages in by_theme.values():
                pages.sort(key=lambda nb: (self.org(nb.org_level, nb.org_code).name, nb.org_code))
            self._lookup = (by_org, by_theme)
        return self._lookup

    def sections(self) -> dict[str, str]:
        """Extra-page sections in first-seen order, as {slug: section name}."""
        found: dict[str, str] = {}
        for page in self.extra_pages:
            found.setdefault(page.slug, page.section)
        return found


# --- URLs relative to the site root (the same in the Quarto project and the site) ---


def org_index_url(level: str, code: str) -> str:
    """Site-root-relative URL of an organisation's page."""
    return f"orgs/{level}/{code}/index.html"


def org_theme_url(level: str, code: str, theme: str) -> str:
    """Site-root-relative URL of one organisation's page for one theme."""
    return f"orgs/{level}/{code}/{theme}.html"


def theme_url(theme: str) -> str:
    """Site-root-relative URL of a theme page."""
    return f"themes/{theme}.html"


def level_label(level: str) -> str:
    """Plain-English name of an organisation level."""
    return ORG_LEVEL_LABELS.get(level, level)


# --- reading the manifest ---


def load_manifest(out: Path) -> dict:
    """Read ``out/run_manifest.json``.

    Raises
    ------
    FileNotFoundError
        When the manifest is absent (the notebooks have not been run).
    ValueError
        When it is not a JSON object.
    """
    path = Path(out) / "run_manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"No run manifest at {path}: run the notebooks (moopt build) before building the site."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"The run manifest {path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ValueError(f"The run manifest {path} must hold a JSON object.")
    return manifest


def _text(value: Any, default: str = "") -> str:
    return default if value is None else str(value)


def _read_org(raw: dict) -> OrgInfo:
    if not isinstance(raw, dict):
        raise ValueError(f"Each entry of manifest['organisations'] must be an object, not {raw!r}.")
    level = check_org_level(raw.get("level"))
    code = check_safe_code(raw.get("code"))
    return OrgInfo(
        level=level,
        code=code,
        name=_text(raw.get("name"), code),
        parent_code=raw.get("parent_code"),
        parent_name=raw.get("parent_name"),
        region_code=raw.get("region_code"),
        region_name=raw.get("region_name"),
        ancestors=tuple(_read_ancestor(a) for a in raw.get("ancestors") or []),
    )


def _read_ancestor(raw: dict) -> tuple[str, str, str]:
    if not isinstance(raw, dict):
        raise ValueError(f"Each ancestor of an organisation in the manifest must be an object, not {raw!r}.")
    code = check_safe_code(raw.get("code"))
    return check_org_level(raw.get("level")), code, _text(raw.get("name"), code)


def _read_theme(raw: dict) -> ThemeInfo:
    if not isinstance(raw, dict):
        raise ValueError(f"Each entry of manifest['themes'] must be an object, not {raw!r}.")
    theme_id = check_theme_id(raw.get("id"))
    indicators = raw.get("indicators") or []
    if not isinstance(indicators, list) or not all(isinstance(i, dict) for i in indicators):
        raise ValueError(f"The indicators of theme {theme_id!r} must be a list of objects.")
    return ThemeInfo(
        id=theme_id,
        title=_text(raw.get("title"), theme_id),
        description=_text(raw.get("description")),
        indicators=tuple(indicators),
    )


def _read_notebook(out: Path, raw: dict) -> NotebookPage:
    if not isinstance(raw, dict):
        raise ValueError(f"Each entry of manifest['notebooks'] must be an object, not {raw!r}.")
    level = check_org_level(raw.get("org_level"))
    code = check_safe_code(raw.get("org_code"))
    theme = check_theme_id(raw.get("theme"))
    status = _text(raw.get("status"), "ok")
    rel = raw.get("path") or f"notebooks/{level}/{code}/{theme}.ipynb"
    if isinstance(rel, str) and Path(rel).is_absolute():
        # The runner writes paths relative to the outputs folder; accept an absolute one inside it.
        try:
            rel = Path(rel).resolve().relative_to(Path(out).resolve()).as_posix()
        except ValueError:
            if status != "failed":
                raise ValueError(
                    f"The notebook path {rel!r} is outside the outputs folder {out}."
                ) from None
            rel = f"notebooks/{level}/{code}/{theme}.ipynb"  # unused: failed pages show the error
    rel_path = check_relative_path(rel, "notebook", (".ipynb",))
    csv = tuple(check_relative_path(c, "CSV download", (".csv",)) for c in raw.get("csv") or [])
    for c in csv:
        if c.parts[0] != "csv":
            raise ValueError(f"The CSV download path {str(c)!r} must start with 'csv/'.")
    error = raw.get("error")
    source: Path | None = Path(out) / rel_path
    if status != "failed" and not source.is_file():
        # Never silently drop a page: show it as failed, saying why.
        error = f"The executed notebook {rel} was not found in the outputs folder."
        source = None
    elif status == "failed":
        source = None
        error = _text(error, "The notebook failed without an error message.")
    return NotebookPage(level, code, theme, source, status, error, csv)


def _read_extra_page(out: Path, raw: dict) -> ExtraPage:
    if not isinstance(raw, dict):
        raise ValueError(f"Each entry of manifest['extra_pages'] must be an object, not {raw!r}.")
    path = check_relative_path(raw.get("path"), "extra page", (".md", ".qmd"))
    if path.parts[0] in RESERVED_SLUGS or str(path.with_suffix("")) in RESERVED_SLUGS:
        raise ValueError(
            f"The extra page {str(path)!r} would overwrite one of the site's own pages."
        )
    source = Path(out) / "pages" / path
    if not source.is_file():
        raise ValueError(
            f"The extra page {str(path)!r} is listed in the manifest but {source} is missing."
        )
    section = _text(raw.get("section"), "Methodology")
    title = _text(raw.get("title"), path.stem)
    return ExtraPage(
        path=path, title=title, section=section, slug=slugify_section(section), source=source
    )


def plan_site(out: Path, manifest: dict) -> SitePlan:
    """Check a run manifest and return the plan of the site.

    Parameters
    ----------
    out : Path
        The outputs folder that holds ``notebooks/``, ``csv/`` and ``pages/``.
    manifest : dict
        The run manifest (see :func:`moopt.site.build_site`).

    Returns
    -------
    SitePlan

    Raises
    ------
    ValueError
        When a level, code, theme id or path is unusable (the message names it).
    """
    if not isinstance(manifest, dict):
        raise ValueError("The run manifest must be a dict.")
    out = Path(out)
    orgs: dict[tuple[str, str], OrgInfo] = {}
    for raw in manifest.get("organisations") or []:
        org = _read_org(raw)
        orgs[(org.level, org.code)] = org
    themes: dict[str, ThemeInfo] = {}
    for raw in manifest.get("themes") or []:
        theme = _read_theme(raw)
        if theme.id != OVERVIEW_THEME:
            themes[theme.id] = theme
    notebooks: list[NotebookPage] = []
    overview: NotebookPage | None = None
    seen: set[tuple[str, str, str]] = set()
    for raw in manifest.get("notebooks") or []:
        page = _read_notebook(out, raw)
        key = (page.org_level, page.org_code, page.theme)
        if key in seen:
            raise ValueError(f"The manifest lists the notebook {'/'.join(key)} twice.")
        seen.add(key)
        if page.theme == OVERVIEW_THEME and page.org_level == "england":
            overview = page
        else:
            notebooks.append(page)
    extra_pages = [_read_extra_page(out, raw) for raw in manifest.get("extra_pages") or []]
    landing_pages = {f"{page.slug}.html" for page in extra_pages}
    outputs_seen: set[str] = set()
    for page in extra_pages:
        output = str(page.path.with_suffix(".html"))
        if output in landing_pages or output in outputs_seen:
            raise ValueError(
                f"The extra page {str(page.path)!r} would overwrite another page ({output})."
            )
        outputs_seen.add(output)
    synthetic = bool(manifest.get("synthetic", False))
    notice = _text(manifest.get("data_notice"))
    if synthetic and not notice:
        notice = DEFAULT_SYNTHETIC_NOTICE
    org_level = manifest.get("org_level")
    if org_level is not None:
        check_org_level(org_level)
    plan = SitePlan(
        out=out,
        title=_text(manifest.get("title"), DEFAULT_TITLE),
        synthetic=synthetic,
        data_notice=notice,
        period=manifest.get("period") or {},
        generated_at=_text(manifest.get("generated_at")),
        version=_text(manifest.get("moopt_version")),
        org_level=org_level,
        orgs=orgs,
        themes=themes,
        notebooks=notebooks,
        overview=overview,
        extra_pages=extra_pages,
        data_sources=list(manifest.get("data_sources") or []),
        data_description=_text(manifest.get("data_description")),
        contact=manifest.get("contact"),
    )
    for page in notebooks:  # register organisations and themes known only from notebooks
        plan.org(page.org_level, page.org_code)
        plan.theme(page.theme)
    return plan


def group_orgs(orgs: list[OrgInfo]) -> list[tuple[str, list[tuple[str, list[OrgInfo]]]]]:
    """Group organisations by region, then by parent (ICB), sorted by name.

    Returns
    -------
    list of (region name, list of (parent name, organisations))
        A parent name of "" means the organisations have no parent below the region.
    """
    regions: dict[str, dict[str, list[OrgInfo]]] = {}
    for org in orgs:
        region = org.region_name or org.region_code or "Other organisations"
        parent = ""
        if org.parent_code and org.parent_code != org.region_code:
            parent = org.parent_name or org.parent_code
        regions.setdefault(region, {}).setdefault(parent, []).append(org)
    grouped = []
    for region in sorted(regions):
        parents = regions[region]
        grouped.append(
            (
                region,
                [(p, sorted(parents[p], key=lambda o: (o.name, o.code))) for p in sorted(parents)],
            )
        )
    return grouped
