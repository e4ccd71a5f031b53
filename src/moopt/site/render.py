"""moopt's built-in renderer: the Quarto project to a static HTML site, without Quarto.

It reads the project :func:`moopt.site.project.write_project` wrote: Markdown
pages (``.qmd``/``.md``) lose their YAML front matter and go through mistune,
notebook pages (``.ipynb``) go through nbconvert with code hidden, and every
page is wrapped in one NHS-styled shell (``templates/page.html.j2``) with the
header, navigation, skip link, breadcrumb, synthetic-data banner and footer.
Titles and breadcrumbs come from ``_moopt_site.json`` as plain text and are
escaped by Jinja2's autoescape.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import nbformat
from markupsafe import Markup

from moopt.atomic import write_text_atomic
from moopt.charts.web import write_chart_assets
from moopt.site.files import copy_tree
from moopt.site.markdown import render_markdown, split_front_matter
from moopt.site.notebooks import notebook_fragment
from moopt.site.project import SITE_INFO_FILE
from moopt.site.style import TEMPLATE_DIR, environment, render_template

# Pages holding a chart load the chart scripts; the others do not.
CHART_MARKER = 'class="moopt-vega"'

# moopt's progress convention: a callable taking one plain-English message.
Progress = Callable[[str], None]


def read_site_info(project_dir: Path) -> dict:
    """Read ``_moopt_site.json`` from a project written by moopt."""
    path = Path(project_dir) / SITE_INFO_FILE
    if not path.is_file():
        raise ValueError(
            f"{project_dir} is not a project written by moopt.site ({SITE_INFO_FILE} is missing)."
        )
    return json.loads(path.read_text(encoding="utf-8"))


_TABLE = re.compile(r"<table\b.*?</table>", re.S | re.I)
_CAPTION = re.compile(r"<caption\b[^>]*>(.*?)</caption>", re.S | re.I)
_HEADING = re.compile(r"<h([2-6])\b[^>]*>(.*?)</h\1>", re.S | re.I)
_TAG = re.compile(r"<[^>]+>")


def _plain(fragment: str) -> str:
    return " ".join(html.unescape(_TAG.sub("", fragment)).split())


def wrap_tables(body: str) -> str:
    """Put every table in a keyboard-reachable scrolling region.

    A wide table scrolls sideways on a small screen; without a focusable
    scroller a keyboard user cannot scroll it (axe rule
    scrollable-region-focusable, WCAG 2.1.1). Each wrapper is a labelled
    region: named after the table's caption, else the heading above it.

    Examples
    --------
    >>> wrap_tables("<h2>Costs</h2><table><tr><td>1</td></tr></table>")  # doctest: +ELLIPSIS
    '<h2>Costs</h2><div class="moopt-table-scroll" tabindex="0" role="region" aria-label="Table: Costs">...'
    """
    pieces, last = [], 0
    heading = ""
    for match in _TABLE.finditer(body):
        before = body[last : match.start()]
        headings = _HEADING.findall(before)
        if headings:
            heading = _plain(headings[-1][1])
        caption = _CAPTION.search(match.group(0))
        name = _plain(caption.group(1)) if caption else heading
        label = html.escape(f"Table: {name}" if name else "Table", quote=True)
        pieces += [
            before,
            f'<div class="moopt-table-scroll" tabindex="0" role="region" aria-label="{label}">',
            match.group(0),
            "</div>",
        ]
        last = match.end()
    pieces.append(body[last:])
    return "".join(pieces)


def page_body(project_dir: Path, page: dict, cache: "BodyCache | None" = None) -> str:
    """HTML of one page's content (no shell), every table in a scrolling region.

    Notebook pages come from ``cache`` when their prepared notebook is unchanged.
    """
    source = Path(project_dir) / page["source"]
    if page["kind"] == "notebook":
        if cache is None:
            return wrap_tables(notebook_fragment(nbformat.read(str(source), as_version=4)))
        data = source.read_bytes()
        return cache.get_or_make(data, lambda: wrap_tables(notebook_fragment(
            nbformat.reads(data.decode("utf-8"), as_version=4))))
    _, body = split_front_matter(source.read_text(encoding="utf-8"))
    return wrap_tables(render_markdown(body))


class BodyCache:
    """Rendered notebook bodies kept between builds, keyed by the prepared notebook's bytes.

    Turning a notebook into HTML (nbconvert) is most of the site's rendering time; a
    rebuild in which a page's notebook did not change reuses its body. The key also
    covers the renderer's own templates and the nbconvert version, so a change there
    renders everything again. Entries not used by a build are removed at its end.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.salt = _renderer_digest()
        self.used: set[str] = set()
        self.hits = 0
        self.misses = 0

    def get_or_make(self, source: bytes, make: Callable[[], str]) -> str:
        key = hashlib.sha256(self.salt.encode() + source).hexdigest()
        self.used.add(key)
        path = self.folder / f"{key}.html"
        if path.is_file():
            self.hits += 1
            return path.read_text(encoding="utf-8")
        self.misses += 1
        body = make()
        write_text_atomic(path, body)
        return body

    def prune(self) -> None:
        for path in self.folder.glob("*.html"):
            if path.stem not in self.used:
                path.unlink(missing_ok=True)


def _renderer_digest() -> str:
    import nbconvert

    digest = hashlib.sha256(nbconvert.__version__.encode())
    for path in sorted((TEMPLATE_DIR / "nbconvert").rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    for module in ("notebooks.py", "render.py"):  # how a notebook becomes a body (wrap_tables too)
        digest.update(Path(__file__).with_name(module).read_bytes())
    return digest.hexdigest()


def render_builtin(
    project_dir: Path, site_dir: Path, progress: Progress | None = None
) -> list[str]:
    """Render every page of the project into ``site_dir``.

    Parameters
    ----------
    project_dir : Path
        The Quarto project (``out/quarto``).
    site_dir : Path
        An empty folder to write the site into.
    progress : callable, optional
        Called with a one-line message (e.g. ``"site: 120/966 pages rendered"``)
        about every tenth of the pages and after the last one.

    Returns
    -------
    list of str
        Site-root-relative paths of the pages written.
    """
    project_dir, site_dir = Path(project_dir), Path(site_dir)
    info = read_site_info(project_dir)
    template = environment().get_template("page.html.j2")
    cache = BodyCache(project_dir.parent / "cache" / "site-bodies")
    written = []
    total = len(info["pages"])
    report_every = max(1, total // 10)
    for done, page in enumerate(info["pages"], start=1):
        body = page_body(project_dir, page, cache)
        depth = len(PurePosixPath(page["output"]).parts) - 1
        html = template.render(site=info["site"], page=page, root="../" * depth, body=Markup(body),
                               has_charts=CHART_MARKER in body)
        target = site_dir / page["output"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html, encoding="utf-8")
        written.append(page["output"])
        if progress is not None and (done % report_every == 0 or done == total):
            progress(f"site: {done}/{total} pages rendered")
    cache.prune()
    if progress is not None and cache.hits:
        progress(f"site: {cache.hits} notebook page(s) reused unchanged, {cache.misses} rendered")
    copy_tree(project_dir / "csv", site_dir / "csv")
    copy_tree(project_dir / "assets", site_dir / "assets")  # the finder's script and list
    assets = site_dir / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "moopt.css").write_text(render_template("moopt.css.j2"), encoding="utf-8")
    write_chart_assets(assets, cache_dir=project_dir.parent / "cache" / "assets")
    return written
