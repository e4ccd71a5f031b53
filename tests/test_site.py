"""Tests for moopt.site: the Quarto project writer, the built-in renderer and the link checker.

A tiny outputs folder (2 organisations x 2 themes + the England overview, one
failed notebook) is made with nbformat; no notebook runner or Quarto is needed.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
import yaml

from moopt.site import QuartoNotFoundError, build_site, check_links
from moopt.site import render as render_module
from moopt.site.markdown import md_text, render_markdown
from moopt.site.notebooks import rewrite_csv_links

# 1x1 PNG.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6k"
    "gAAAABJRU5ErkJggg=="
)
EVIL_NAME = "<script>alert(1)</script> & Partners"
NOTICE = "SYNTHETIC DATA: organisation names, codes and figures are generated for testing."
ERROR_TEXT = "ZeroDivisionError: denominator <zero> & co"

ORGS = [
    {
        "code": "A1B",
        "name": "NHS Example ICB - A1B",
        "level": "sub_icb",
        "parent_code": "QAB",
        "parent_name": "NHS Example Integrated Care Board",
        "region_code": "Y60",
        "region_name": "Midlands",
    },
    {
        "code": "X9Z",
        "name": EVIL_NAME,
        "level": "sub_icb",
        "parent_code": "QXY",
        "parent_name": "NHS Other Integrated Care Board",
        "region_code": "Y56",
        "region_name": "London",
    },
]
THEMES = [
    {
        "id": "antimicrobials",
        "title": "Antimicrobials",
        "description": "Antibiotic use, *per 1,000 patients*.",
        "indicators": [
            {
                "id": "AMR01",
                "title": "Antibacterial items per STAR-PU",
                "short_title": "Antibacterials",
                "improvement_direction": "decrease",
                "unit": "items per STAR-PU",
            }
        ],
    },
    {
        "id": "opioids",
        "title": "Opioids",
        "description": "High-dose opioid prescribing.",
        "indicators": [
            {
                "id": "OPI01",
                "title": "Opioid ADQ per 1,000 patients",
                "short_title": "Opioids",
                "improvement_direction": "decrease",
                "unit": "ADQ per 1,000 patients",
            }
        ],
    },
]
FAILED = ("X9Z", "opioids")


def _csv_rel(level: str, code: str, theme: str) -> str:
    return f"csv/{level}/{code}/{theme}/{theme.upper()[:3]}01_trend.csv"


def _notebook(level: str, code: str, theme: str, csv_rel: str) -> nbformat.NotebookNode:
    """An executed-looking notebook: front matter, markdown, code with image and HTML outputs."""
    front = nbformat.v4.new_raw_cell(f"---\ntitle: runner title {code}\n---")
    intro = nbformat.v4.new_markdown_cell(
        f"# NOTEBOOK_OWN_TITLE\n\n## About this page\n\nFigures for {code}. [Download the data (markdown link)]({csv_rel})"
    )
    chart = nbformat.v4.new_code_cell("plot_chart()  # SECRET_CODE_SHOULD_BE_HIDDEN")
    chart.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={"image/png": PNG, "text/plain": "<Figure>"},
            metadata={
                "image/png": {"alt": f"Line chart of {theme} for {code} against national deciles"}
            },
        ),
        nbformat.v4.new_output(
            "display_data",
            data={
                "text/html": "<table><tr><th>Month</th><th>Value</th></tr>"
                "<tr><td>2026-09</td><td>1.5</td></tr></table>\n"
                f'<p><a href="{csv_rel}">Download CSV</a></p>',
                "text/plain": "table",
            },
        ),
        nbformat.v4.new_output(
            "stream", name="stderr", text="FutureWarning: noisy library warning\n"
        ),
    ]
    bare = nbformat.v4.new_code_cell("plot_other()")
    bare.outputs = [nbformat.v4.new_output("display_data", data={"image/png": PNG})]
    return nbformat.v4.new_notebook(cells=[front, intro, chart, bare])


def make_outputs(root: Path, synthetic: bool = True) -> tuple[Path, dict]:
    """Write a fake outputs folder and return (out, manifest)."""
    out = root / "outputs"
    notebooks = []
    for org in ORGS:
        for theme in THEMES:
            level, code, theme_id = org["level"], org["code"], theme["id"]
            rel = f"notebooks/{level}/{code}/{theme_id}.ipynb"
            csv_rel = _csv_rel(level, code, theme_id)
            entry = {
                "org_level": level,
                "org_code": code,
                "theme": theme_id,
                "path": rel,
                "status": "ok",
                "error": None,
                "seconds": 1.0,
                "csv": [csv_rel],
            }
            if (code, theme_id) == FAILED:
                entry.update(status="failed", error=ERROR_TEXT, csv=[])
            else:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(_notebook(level, code, theme_id, csv_rel), str(out / rel))
                (out / csv_rel).parent.mkdir(parents=True, exist_ok=True)
                (out / csv_rel).write_text(f"month,value\n2026-09,{len(code)}\n", encoding="utf-8")
            notebooks.append(entry)
    overview_rel = "notebooks/england/ENG/overview.ipynb"
    overview_csv = "csv/england/ENG/overview/national_trend.csv"
    (out / overview_rel).parent.mkdir(parents=True, exist_ok=True)
    overview = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(
                f"## National picture\n\nOVERVIEW_MARKER text. [National CSV]({overview_csv})"
            )
        ]
    )
    nbformat.write(overview, str(out / overview_rel))
    (out / overview_csv).parent.mkdir(parents=True, exist_ok=True)
    (out / overview_csv).write_text("month,value\n2026-09,1\n", encoding="utf-8")
    notebooks.append(
        {
            "org_level": "england",
            "org_code": "ENG",
            "theme": "overview",
            "path": overview_rel,
            "status": "ok",
            "error": None,
            "seconds": 1.0,
            "csv": [overview_csv],
        }
    )
    (out / "pages/methodology").mkdir(parents=True)
    (out / "pages/methodology/AMR01.md").write_text(
        "## How AMR01 is calculated\n\nItems divided by STAR-PU.\n", encoding="utf-8"
    )
    manifest = {
        "title": "Medicines optimisation dashboard",
        "synthetic": synthetic,
        "data_notice": NOTICE if synthetic else "",
        "period": {"start": "2024-10", "end": "2026-09"},
        "generated_at": "2026-11-24T08:00:00Z",
        "moopt_version": "0.1.0",
        "data_description": "Generated by moopt's synthetic data generator, seed 42.",
        "org_level": "sub_icb",
        "organisations": ORGS,
        "themes": THEMES,
        "notebooks": notebooks,
        "extra_pages": [
            {"path": "methodology/AMR01.md", "title": "AMR01 method", "section": "Methodology"}
        ],
    }
    (out / "run_manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return out, manifest


class _Page(HTMLParser):
    """Collects links, ids and a tag-balance check for one HTML page."""

    VOID = {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    }

    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []
        self.imgs: list[dict] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "img":
            self.imgs.append(attrs)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if tag in self.stack:
            while self.stack and self.stack[-1] != tag:
                # only <p> and <li> may be closed implicitly in HTML5
                unclosed = self.stack.pop()
                if unclosed not in ("p", "li"):
                    self.errors.append(f"<{unclosed}> closed by </{tag}>")
            self.stack.pop()
        else:
            self.errors.append(f"stray </{tag}>")


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def resolve(page_path: Path, href: str, site: Path) -> str:
    """Site-root-relative path a relative href points at."""
    target = (page_path.parent / href.split("#")[0]).resolve()
    return target.relative_to(site.resolve()).as_posix()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out, manifest = make_outputs(tmp_path_factory.mktemp("site"))
    seen = []
    result = build_site(out, renderer="builtin", progress=seen.append)
    return out, manifest, result, seen


def all_pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


# --- the built site ---


def test_build_result_and_progress(built):
    out, _, result, seen = built
    assert result["renderer"] == "builtin"
    assert result["index"] == out / "site" / "index.html" and result["index"].is_file()
    assert result["pages"] == len(all_pages(out / "site"))
    assert all(isinstance(message, str) for message in seen)
    assert seen[-1] == f"site: {result['pages']}/{result['pages']} pages rendered"
    assert not list(out.glob("site.tmp-*")) and not list(out.glob("quarto.tmp-*"))


def test_index_links_to_every_org_page_and_theme_page(built):
    out, manifest, _, _ = built
    site = out / "site"
    index = site / "index.html"
    targets = {resolve(index, h, site) for h in parse(index).hrefs}
    # The home page stays short: every organisation is one step away, on the organisations page.
    assert "orgs/index.html" in targets
    orgs_page = site / "orgs" / "index.html"
    listed = {resolve(orgs_page, h, site) for h in parse(orgs_page).hrefs}
    for org in manifest["organisations"]:
        assert f"orgs/{org['level']}/{org['code']}/index.html" in listed
    for theme in manifest["themes"]:
        assert f"themes/{theme['id']}.html" in targets
    assert "OVERVIEW_MARKER" in index.read_text(encoding="utf-8")
    # org and theme pages link on to every notebook page
    for nb in manifest["notebooks"]:
        if nb["theme"] == "overview":
            continue
        page = f"orgs/{nb['org_level']}/{nb['org_code']}/{nb['theme']}.html"
        org_index = site / f"orgs/{nb['org_level']}/{nb['org_code']}/index.html"
        theme_page = site / f"themes/{nb['theme']}.html"
        assert page in {resolve(org_index, h, site) for h in parse(org_index).hrefs}
        assert page in {resolve(theme_page, h, site) for h in parse(theme_page).hrefs}
        assert (site / page).is_file()


def test_site_has_no_broken_links(built):
    out, _, result, _ = built
    assert check_links(out / "site") == []
    assert result["broken_links"] == [] and result["missing_csv"] == []


def test_csv_download_links_resolve_from_notebook_pages(built):
    out, _, _, _ = built
    site = out / "site"
    page = site / "orgs/sub_icb/A1B/antimicrobials.html"
    csv_rel = _csv_rel("sub_icb", "A1B", "antimicrobials")
    csv_links = [h for h in parse(page).hrefs if h.endswith(".csv")]
    assert len(csv_links) == 2  # the HTML output link and the markdown-cell link
    for href in csv_links:
        assert resolve(page, href, site) == csv_rel
    assert (site / csv_rel).read_text() == (out / csv_rel).read_text()
    index = site / "index.html"
    assert [resolve(index, h, site) for h in parse(index).hrefs if h.endswith(".csv")] == [
        "csv/england/ENG/overview/national_trend.csv"
    ]


def test_check_links_detects_broken_links(built, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(built[0] / "site", site)
    (site / "orgs/broken.html").write_text(
        '<!DOCTYPE html><html lang="en-GB"><body><a href="sub_icb/NOPE/index.html">x</a>'
        '<img src="../missing.png" alt="m"><a href="../about.html#no-such-heading">y</a>'
        '<a href="../../outside.html">z</a><a href="../about.html#accessibility-statement">ok</a>'
        '<a href="https://example.org/">ext</a><a href="#">top</a></body></html>',
        encoding="utf-8",
    )
    assert sorted(check_links(site)) == sorted(
        [
            ("orgs/broken.html", "sub_icb/NOPE/index.html"),
            ("orgs/broken.html", "../missing.png"),
            ("orgs/broken.html", "../about.html#no-such-heading"),
            ("orgs/broken.html", "../../outside.html"),
        ]
    )


def test_synthetic_banner_on_every_page(built):
    out, _, _, _ = built
    pages = all_pages(out / "site")
    assert len(pages) >= 12
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert 'class="moopt-banner"' in text and html.escape(NOTICE) in text, page


def test_no_banner_when_not_synthetic(tmp_path):
    out, _ = make_outputs(tmp_path, synthetic=False)
    build_site(out, renderer="builtin")
    for page in all_pages(out / "site"):
        assert "moopt-banner" not in page.read_text(encoding="utf-8")


def test_data_text_is_escaped(built):
    out, _, _, _ = built
    escaped = html.escape(EVIL_NAME, quote=False)
    for page in all_pages(out / "site"):
        assert "<script>alert" not in page.read_text(encoding="utf-8"), page
    for name in (  # (the home page names no organisation: it lists regions from the results, and has none here)
        "orgs/sub_icb/X9Z/index.html",
        "orgs/index.html",
        "themes/antimicrobials.html",
    ):
        assert escaped in (out / "site" / name).read_text(encoding="utf-8"), name
    # the Quarto project escapes it too: Pandoc would read raw HTML in Markdown or YAML titles
    for qmd in (out / "quarto").rglob("*.qmd"):
        assert "<script>" not in qmd.read_text(encoding="utf-8"), qmd
    assert "<script>" not in (out / "quarto/_quarto.yml").read_text(encoding="utf-8")


def test_failed_notebook_page_shows_the_error(built):
    out, _, _, _ = built
    page = out / "site/orgs/sub_icb/X9Z/opioids.html"
    text = page.read_text(encoding="utf-8")
    assert "This page failed to build" in text and 'role="alert"' in text
    assert html.escape(ERROR_TEXT, quote=False) in text
    org_page = (out / "site/orgs/sub_icb/X9Z/index.html").read_text(encoding="utf-8")
    assert "failed to build" in org_page


def test_notebook_pages_hide_code_keep_outputs_and_alt_text(built):
    out, _, _, _ = built
    page = out / "site/orgs/sub_icb/A1B/opioids.html"
    text = page.read_text(encoding="utf-8")
    assert "SECRET_CODE_SHOULD_BE_HIDDEN" not in text
    assert "noisy library warning" not in text  # stderr dropped
    assert "<td>2026-09</td>" in text  # HTML table output kept
    assert "runner title" not in text  # the front-matter cell is not shown as text
    assert "NOTEBOOK_OWN_TITLE" not in text  # the page title is the one h1
    alts = [img.get("alt") for img in parse(page).imgs]
    assert alts[0] == "Line chart of opioids for A1B against national deciles"
    assert len(alts) == 2 and all(alts)  # an image without alt text gets a stated fallback


def test_pages_are_valid_html5_shells(built):
    out, _, _, _ = built
    for page in all_pages(out / "site"):
        text = page.read_text(encoding="utf-8")
        parsed = parse(page)
        assert text.startswith("<!DOCTYPE html>"), page
        assert '<html lang="en-GB">' in text, page
        assert parsed.tags.count("main") == 1 and parsed.tags.count("h1") == 1, page
        assert parsed.errors == [] and parsed.stack == [], (page, parsed.errors, parsed.stack)
        assert 'href="#maincontent"' in text and 'id="maincontent"' in text
        assert "Built 24 November 2026, 08:00 UTC by moopt 0.1.0." in text


def test_navigation_lists_methodology_and_extra_pages(built):
    out, _, _, _ = built
    site = out / "site"
    page = site / "orgs/sub_icb/A1B/antimicrobials.html"
    nav_targets = [resolve(page, h, site) for h in parse(page).hrefs]
    for target in (
        "index.html",
        "orgs/index.html",
        "themes/index.html",
        "methodology.html",
        "about.html",
    ):
        assert target in nav_targets
    assert "How AMR01 is calculated" in (site / "methodology/AMR01.html").read_text(
        encoding="utf-8"
    )
    methodology = site / "methodology.html"
    assert "methodology/AMR01.html" in {
        resolve(methodology, h, site) for h in parse(methodology).hrefs
    }
    crumbs = page.read_text(encoding="utf-8").split('aria-label="Breadcrumb"')[1].split("</nav>")[0]
    assert "NHS Example ICB - A1B" in crumbs and "Antimicrobials" in crumbs


def test_about_page_content(built):
    text = (built[0] / "site/about.html").read_text(encoding="utf-8")
    for phrase in (
        "not a league table",
        "Data sources",
        "fictional",
        'id="accessibility-statement"',
    ):
        assert phrase in text


# --- the Quarto project ---


def test_quarto_project_written(built):
    out, manifest, _, _ = built
    project = out / "quarto"
    config = yaml.safe_load((project / "_quarto.yml").read_text(encoding="utf-8"))
    assert config["project"]["type"] == "website"
    assert config["project"]["output-dir"] == "../site"
    assert config["execute"]["enabled"] is False
    assert "csv/**" in config["project"]["resources"]
    render = config["project"]["render"]
    for expected in (
        "index.qmd",
        "about.qmd",
        "orgs/index.qmd",
        "themes/index.qmd",
        "themes/opioids.qmd",
        "orgs/sub_icb/A1B/index.qmd",
        "orgs/sub_icb/A1B/antimicrobials.ipynb",
        "orgs/sub_icb/X9Z/opioids.qmd",
        "methodology.qmd",
        "methodology/AMR01.md",
    ):
        assert expected in render
    for source in render:
        assert (project / source).is_file(), source
    navbar = [item["href"] for item in config["website"]["navbar"]["left"]]
    assert navbar == [
        "index.qmd",
        "orgs/index.qmd",
        "themes/index.qmd",
        "methodology.qmd",
        "about.qmd",
    ]
    assert "_banner.html" in config["format"]["html"]["include-before-body"]
    # the base settings came from the repository's _quarto.yml
    assert config["format"]["html"]["notebook-links"] is False
    # the copied notebook: front matter first, CSV links rewritten for its depth, fig-alt for Quarto
    nb = nbformat.read(str(project / "orgs/sub_icb/A1B/antimicrobials.ipynb"), as_version=4)
    assert nb.cells[0].cell_type == "raw" and nb.cells[0].source.startswith("---\ntitle:")
    assert "../../../csv/sub_icb/A1B/antimicrobials/ANT01_trend.csv" in nb.cells[1].source
    assert nb.cells[2].source.startswith("#| fig-alt: ")


def test_base_config_argument_is_merged(tmp_path):
    out, _ = make_outputs(tmp_path)
    base = tmp_path / "base.yml"
    base.write_text(
        "website:\n  title: ignored\n  favicon: nhs.png\nformat:\n  html:\n    toc: false\n"
    )
    build_site(out, renderer="builtin", base_config=base)
    config = yaml.safe_load((out / "quarto/_quarto.yml").read_text(encoding="utf-8"))
    assert config["website"]["favicon"] == "nhs.png" and config["format"]["html"]["toc"] is False
    assert config["website"]["title"] == "Medicines optimisation dashboard"


def test_builtin_renderer_reads_the_project_pages(tmp_path, monkeypatch):
    out, _ = make_outputs(tmp_path)
    build_site(out, renderer="builtin")
    about = out / "quarto/about.qmd"
    about.write_text(about.read_text(encoding="utf-8") + "\nEDITED_IN_PROJECT\n", encoding="utf-8")
    site = tmp_path / "site2"
    site.mkdir()
    render_module.render_builtin(out / "quarto", site)
    assert "EDITED_IN_PROJECT" in (site / "about.html").read_text(encoding="utf-8")


# --- validation and failure handling ---


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("org_code", "../etc", "../etc"),
        ("theme", "Bad-Theme", "Bad-Theme"),
        ("org_level", "ccg", "ccg"),
    ],
)
def test_unsafe_codes_raise_value_error(tmp_path, field, value, named):
    out, manifest = make_outputs(tmp_path)
    manifest["notebooks"][0][field] = value
    with pytest.raises(ValueError, match=re.escape(named)):
        build_site(out, manifest=manifest, renderer="builtin")
    assert not (out / "site").exists()


def test_unsafe_organisation_and_paths_raise(tmp_path):
    out, manifest = make_outputs(tmp_path)
    bad_org = json.loads(json.dumps(manifest))
    bad_org["organisations"][0]["code"] = "A1B<x>"
    with pytest.raises(ValueError, match=re.escape("A1B<x>")):
        build_site(out, manifest=bad_org, renderer="builtin")
    bad_csv = json.loads(json.dumps(manifest))
    bad_csv["notebooks"][0]["csv"] = ["csv/../../secret.csv"]
    with pytest.raises(ValueError, match="secret.csv"):
        build_site(out, manifest=bad_csv, renderer="builtin")


def test_absolute_notebook_paths_must_be_inside_outputs(tmp_path):
    out, manifest = make_outputs(tmp_path)
    entry = manifest["notebooks"][0]
    entry["path"] = str((out / entry["path"]).resolve())
    build_site(out, manifest=manifest, renderer="builtin")
    assert "<td>2026-09</td>" in (out / "site/orgs/sub_icb/A1B/antimicrobials.html").read_text()
    entry["path"] = str(tmp_path / "elsewhere.ipynb")
    with pytest.raises(ValueError, match="outside the outputs folder"):
        build_site(out, manifest=manifest, renderer="builtin")


def test_unsafe_or_clashing_extra_pages_raise(tmp_path):
    out, manifest = make_outputs(tmp_path)
    (out / "pages/methodology.md").write_text("clash", encoding="utf-8")
    for path, named in [("../secret.md", "secret.md"), ("methodology.md", "overwrite")]:
        bad = json.loads(json.dumps(manifest))
        bad["extra_pages"].append({"path": path, "title": "x", "section": "Methodology"})
        with pytest.raises(ValueError, match=re.escape(named)):
            build_site(out, manifest=bad, renderer="builtin")


def test_failed_overview_is_shown_on_the_home_page(tmp_path):
    out, manifest = make_outputs(tmp_path)
    overview = next(nb for nb in manifest["notebooks"] if nb["theme"] == "overview")
    overview.update(status="failed", error="KeyError: 'england'")
    build_site(out, manifest=manifest, renderer="builtin")
    text = (out / "site/index.html").read_text(encoding="utf-8")
    assert "This page failed to build" in text and "KeyError: 'england'" in text
    assert "OVERVIEW_MARKER" not in text


def test_failure_midway_leaves_no_partial_site(tmp_path, monkeypatch):
    out, _ = make_outputs(tmp_path)
    build_site(out, renderer="builtin")
    before = {
        p.relative_to(out / "site"): p.read_bytes()
        for p in (out / "site").rglob("*")
        if p.is_file()
    }
    real_body = render_module.page_body
    calls = []

    def failing_body(project_dir, page, cache=None):
        calls.append(page["output"])
        if len(calls) == 4:
            raise RuntimeError("renderer crashed")
        return real_body(project_dir, page, cache)

    monkeypatch.setattr(render_module, "page_body", failing_body)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        build_site(out, renderer="builtin")
    after = {
        p.relative_to(out / "site"): p.read_bytes()
        for p in (out / "site").rglob("*")
        if p.is_file()
    }
    assert after == before  # the previous complete site is untouched
    assert not list(out.glob("site.tmp-*")) and not list(out.glob("site.old-*"))

    shutil.rmtree(out / "site")
    calls.clear()
    with pytest.raises(RuntimeError, match="renderer crashed"):
        build_site(out, renderer="builtin")
    assert not (out / "site").exists() and not list(out.glob("site.*"))


def test_quarto_renderer_without_quarto_raises_clear_error(tmp_path, monkeypatch):
    out, _ = make_outputs(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin-here"))
    with pytest.raises(QuartoNotFoundError, match="quarto.*PATH"):
        build_site(out, renderer="quarto")
    assert not (out / "site").exists()
    assert build_site(out, renderer="auto")["renderer"] == "builtin"
    with pytest.raises(ValueError, match="renderer"):
        build_site(out, renderer="pandoc")


FAKE_QUARTO = """#!/bin/sh
# Stands in for Quarto: `quarto render PROJECT --output-dir DIR` (DIR relative to PROJECT).
[ "$1" = render ] && [ "$3" = --output-dir ] || exit 2
[ -f "$2/_quarto.yml" ] || exit 3
[ -n "$FAKE_QUARTO_FAIL" ] && { echo "ERROR: fake failure" >&2; exit 1; }
mkdir -p "$2/$4"
echo '<!DOCTYPE html><html lang="en-GB"><body>quarto</body></html>' > "$2/$4/index.html"
"""


def test_quarto_renderer_is_called_and_swapped_in(tmp_path, monkeypatch):
    out, _ = make_outputs(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "quarto").write_text(FAKE_QUARTO)
    (bin_dir / "quarto").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    result = build_site(out, renderer="auto")
    assert result["renderer"] == "quarto"
    assert "quarto" in (out / "site/index.html").read_text()
    monkeypatch.setenv("FAKE_QUARTO_FAIL", "1")
    with pytest.raises(RuntimeError, match="fake failure"):
        build_site(out, renderer="quarto")
    assert "quarto" in (out / "site/index.html").read_text()  # previous site kept
    assert not list(out.glob("site.tmp-*"))


def test_missing_notebook_file_is_shown_as_failed(tmp_path):
    out, manifest = make_outputs(tmp_path)
    (out / "notebooks/sub_icb/A1B/opioids.ipynb").unlink()
    build_site(out, renderer="builtin")
    text = (out / "site/orgs/sub_icb/A1B/opioids.html").read_text(encoding="utf-8")
    assert "This page failed to build" in text and "was not found" in text


# --- helpers ---


def test_rewrite_csv_links_only_touches_outputs_relative_links():
    found: set[str] = set()
    text = (
        '<a href="csv/a/B1/t/c.csv">x</a> <a href="./csv/a/B1/t/d.csv">y</a> '
        '[m](csv/a/B1/t/e.csv) <a href="../elsewhere/csv/f.csv">z</a> <a href="https://x.org/csv/g.csv">w</a>'
    )
    result = rewrite_csv_links(text, "../../", found)
    assert 'href="../../csv/a/B1/t/c.csv"' in result and 'href="../../csv/a/B1/t/d.csv"' in result
    assert "(../../csv/a/B1/t/e.csv)" in result
    assert 'href="../elsewhere/csv/f.csv"' in result and 'href="https://x.org/csv/g.csv"' in result
    assert found == {"csv/a/B1/t/c.csv", "csv/a/B1/t/d.csv", "csv/a/B1/t/e.csv"}


@pytest.mark.parametrize(
    "text", [EVIL_NAME, "A *b* _c_ [d](e) `f` # g | h $i$ @j ~k~ ^l^ \\m", "x\ny"]
)
def test_md_text_renders_literally(text):
    rendered = render_markdown(md_text(text))
    plain = html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()
    assert plain == " ".join(text.split())
