"""Prepare executed notebooks for publishing, and turn them into HTML fragments.

The project writer copies every executed notebook into the Quarto project
through :func:`prepare_notebook`, so Quarto and the built-in renderer publish
the same, already-adjusted notebook:

* a raw front-matter cell gives the page its title (Quarto reads the first
  raw cell of an ``.ipynb`` as its front matter);
* CSV download links are rewritten for the page's depth (see below);
* a level-1 heading opening the first Markdown cell is dropped, and so is an
  HTML ``<h2>`` in an output that repeats the page title: the page title is
  the page's one ``<h1>``;
* when the site shows its own synthetic-data banner, a notebook's synthetic-data
  notice (``moopt-synthetic-notice`` mentioning synthetic data) is dropped, so
  the reader sees the notice once; other notices (part of England only) stay;
* stderr stream outputs (library warnings) are dropped: they are noise to a
  reader and are in the executed notebook for anyone debugging;
* every image output gets alt text in its output metadata, and a
  ``#| fig-alt:`` cell option for Quarto.

CSV links
---------
Notebooks link their chart downloads relative to the *outputs* folder
(``csv/<level>/<code>/<theme>/<chart>.csv``). The site keeps the same tree
under its root (``site/csv/...``), so a link is fixed by prefixing ``../``
once per folder between the page and the site root:
``orgs/<level>/<code>/<theme>.html`` gets ``../../../csv/...``. Links that
are already relative to the page (anything not starting ``csv/`` or
``./csv/``) are left alone.
"""

from __future__ import annotations

import html
import json
import re
from functools import lru_cache
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

from moopt.site.markdown import front_matter, md_text, split_front_matter
from moopt.site.style import TEMPLATE_DIR

IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml")
MISSING_ALT = (
    "Chart. No text description was supplied with this chart; the table or CSV download "
    "that goes with it holds the same figures."
)

# A link to a CSV download written relative to the outputs root, in HTML or Markdown.
_CSV_IN_HTML = re.compile(
    r"""(?P<lead>\b(?:href|src)\s*=\s*["'])(?:\./)?(?P<path>csv/[^"'\s#?]+)"""
)
_CSV_IN_MD_INLINE = re.compile(r"(?P<lead>\]\(\s*<?)(?:\./)?(?P<path>csv/[^\s)>#?]+)")
_CSV_IN_MD_REF = re.compile(
    r"(?m)(?P<lead>^[ ]{0,3}\[[^\]]+\]:[ \t]*<?)(?:\./)?(?P<path>csv/[^\s>#?]+)"
)
_LEADING_H1 = re.compile(r"\A\s*#[ \t]+[^\n]*(?:\n|\Z)")
_HTML_H2 = re.compile(r"<h2\b[^>]*>(.*?)</h2>\s*", re.S | re.I)
_NOTICE_DIV = re.compile(
    r"<div\b[^>]*\bclass=\"[^\"]*\bmoopt-synthetic-notice\b[^\"]*\"[^>]*>.*?</div>\s*", re.S | re.I
)
_TAG = re.compile(r"<[^>]+>")
_FIG_ALT_OPTION = re.compile(r"^\s*#\|\s*fig-alt\s*:", re.M)
_FIG_OPTION = re.compile(r"^\s*#\|\s*(fig-alt|fig-cap)\s*:\s*(.+?)\s*$", re.M)


def rewrite_csv_links(text: str, prefix: str, found: set[str] | None = None) -> str:
    """Prefix outputs-root-relative CSV links in HTML or Markdown ``text`` with ``prefix``.

    Parameters
    ----------
    text : str
        HTML or Markdown.
    prefix : str
        ``"../"`` repeated once per folder between the page and the site root.
    found : set of str, optional
        Receives every CSV path seen (relative to the site root), so the caller can copy them.

    Examples
    --------
    >>> rewrite_csv_links('<a href="csv/icb/QAB/t/c.csv">CSV</a>', "../../../")
    '<a href="../../../csv/icb/QAB/t/c.csv">CSV</a>'
    """

    def fix(match: re.Match) -> str:
        if found is not None:
            found.add(match.group("path"))
        return f"{match.group('lead')}{prefix}{match.group('path')}"

    for pattern in (_CSV_IN_HTML, _CSV_IN_MD_INLINE, _CSV_IN_MD_REF):
        text = pattern.sub(fix, text)
    return text


def _join(source) -> str:
    return "".join(source) if isinstance(source, list) else str(source)


def _alt_from_cell(cell) -> str | None:
    options = dict(
        (m.group(1), m.group(2)) for m in _FIG_OPTION.finditer(_join(cell.get("source", "")))
    )
    for key in ("fig-alt", "fig-cap"):
        if key in options:
            value = options[key].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            if value:
                return value
    alt = cell.get("metadata", {}).get("alt")
    return str(alt) if alt else None


def _ensure_alt_text(cell) -> None:
    """Give every image output of a code cell alt text, and Quarto a ``fig-alt`` option."""
    alts: list[str] = []
    for output in cell.get("outputs", []):
        if output.get("output_type") not in ("display_data", "execute_result"):
            continue
        metadata = output.setdefault("metadata", {})
        for mime in IMAGE_MIMES:
            if mime not in output.get("data", {}):
                continue
            per_mime = dict(metadata.get(mime) or {})
            alt = per_mime.get("alt") or metadata.get("alt") or _alt_from_cell(cell) or MISSING_ALT
            per_mime["alt"] = str(alt)
            metadata[mime] = per_mime
            alts.append(str(alt))
    source = _join(cell.get("source", ""))
    if len(alts) == 1 and not _FIG_ALT_OPTION.search(source):
        # json.dumps gives a double-quoted string that is also valid YAML.
        cell["source"] = f"#| fig-alt: {json.dumps(alts[0])}\n{source}"


def _plain(fragment: str) -> str:
    return " ".join(html.unescape(_TAG.sub("", fragment)).split())


def drop_repeats(fragment: str, title: str, drop_synthetic_notice: bool) -> tuple[str, bool]:
    """Remove from an HTML output what the page shell already shows.

    Returns the HTML and whether an ``<h2>`` repeating ``title`` was removed
    (only the first such heading of a page goes).

    Examples
    --------
    >>> drop_repeats("<h2>Safety: A &amp; B</h2><p>Text</p>", "Safety: A & B", False)
    ('<p>Text</p>', True)
    """
    if drop_synthetic_notice:
        fragment = _NOTICE_DIV.sub(
            lambda m: "" if "synthetic" in _plain(m.group(0)).lower() else m.group(0), fragment
        )
    wanted = " ".join(title.split())
    if not wanted:
        return fragment, False
    for match in _HTML_H2.finditer(fragment):
        if _plain(match.group(1)) == wanted:
            return fragment[: match.start()] + fragment[match.end() :], True
    return fragment, False


def prepare_notebook(
    source: Path,
    title: str,
    depth: int,
    site_has_banner: bool = False,
    drop_title_heading: bool = True,
) -> tuple[nbformat.NotebookNode, set[str]]:
    """Read an executed notebook and adjust it for publishing (see the module notes).

    Parameters
    ----------
    source : Path
        The executed notebook.
    title : str
        Page title (plain text; escaped here for Markdown).
    depth : int
        Folders between the page and the site root (3 for ``orgs/<level>/<code>/``).
    site_has_banner : bool, optional
        True when every page of the site carries the synthetic-data banner; the
        notebook's own synthetic-data notice is then dropped.
    drop_title_heading : bool, optional
        Drop the first ``<h2>`` that repeats ``title`` (False where the notebook
        is embedded under another page's ``<h1>``, as the England overview is).

    Returns
    -------
    notebook : nbformat.NotebookNode
    csv_links : set of str
        CSV paths (relative to the site root) that the notebook links to.
    """
    if depth < 0:
        raise ValueError(f"The page depth must be 0 or more, not {depth}.")
    nb = nbformat.read(str(source), as_version=4)
    prefix = "../" * depth
    found: set[str] = set()
    meta: dict = {}
    cells = list(nb.cells)
    if cells and cells[0].cell_type == "raw" and _join(cells[0].source).lstrip().startswith("---"):
        meta, _ = split_front_matter(_join(cells[0].source).lstrip())
        cells = cells[1:]
    meta["title"] = md_text(title)
    kept = []
    title_dropped = not drop_title_heading
    first_markdown = next((c for c in cells if c.cell_type == "markdown"), None)
    if first_markdown is not None:
        # The page title becomes the page's only <h1>; a notebook's own "# Title" would repeat it.
        first_markdown.source = _LEADING_H1.sub("", _join(first_markdown.source), count=1)
    for cell in cells:
        if cell.cell_type == "markdown":
            cell.source = rewrite_csv_links(_join(cell.source), prefix, found)
        elif cell.cell_type == "code":
            outputs = []
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream" and output.get("name") == "stderr":
                    continue
                for mime in ("text/html", "text/markdown"):
                    if mime in output.get("data", {}):
                        text = rewrite_csv_links(_join(output["data"][mime]), prefix, found)
                        if mime == "text/html":
                            text, dropped = drop_repeats(
                                text, "" if title_dropped else title, site_has_banner
                            )
                            title_dropped = title_dropped or dropped
                        output["data"][mime] = text
                outputs.append(output)
            cell.outputs = outputs
            _ensure_alt_text(cell)
        kept.append(cell)
    header = nbformat.v4.new_raw_cell(front_matter(meta).rstrip() + "\n")
    header.id = "moopt-front-matter"  # not a random id: an unchanged page gives identical bytes
    nb.cells = [header, *kept]
    return nb, found


class FragmentExporter(HTMLExporter):
    """nbconvert's HTML exporter without two steps that cost most of its time on moopt's pages.

    * It validates the whole notebook against the nbformat schema after each of its
      preprocessors (a dozen times a page); moopt's notebooks are validated once, when
      :func:`prepare_notebook` reads them, and no preprocessor here changes their shape.
    * It parses and re-serialises the finished HTML with BeautifulSoup to give images
      without alt text a placeholder and make output areas focusable; moopt's pages have
      no such images (:func:`_ensure_alt_text`, charts carry their own description) and
      their template has no output areas to focus.

    On a theme page with 30 charts the two took about two thirds of the export.
    """

    def _validate_preprocessor(self, nbc, preprocessor):  # validated once, when read
        return None

    def from_notebook_node(self, nb, resources=None, **kw):
        from nbconvert.exporters.templateexporter import TemplateExporter
        from nbconvert.filters.highlight import Highlight2HTML
        from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

        resources = self._init_resources(resources)
        self.register_filter("highlight_code", self.filters.get(
            "highlight_code", Highlight2HTML(pygments_lexer="ipython3", parent=self)))
        self.register_filter("filter_data_type", WidgetsDataTypeFilter(
            notebook_metadata=self._nb_metadata, parent=self, resources=resources))
        return TemplateExporter.from_notebook_node(self, nb, resources, **kw)


@lru_cache(maxsize=1)
def _exporter() -> HTMLExporter:
    exporter = FragmentExporter(
        template_name="moopt_fragment",
        extra_template_basedirs=[str(TEMPLATE_DIR / "nbconvert")],
    )
    exporter.exclude_input = True  # code is in the executed notebook; readers see outputs
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.exclude_raw = True  # the front-matter cell is for Quarto
    exporter.exclude_anchor_links = True  # unlabelled pilcrow links fail accessibility checks
    return exporter


def notebook_fragment(nb: nbformat.NotebookNode) -> str:
    """Render a (prepared) notebook to an HTML fragment: outputs and Markdown, no code."""
    body, _ = _exporter().from_notebook_node(nb)
    return f'<div class="moopt-notebook">\n{body.strip()}\n</div>'
