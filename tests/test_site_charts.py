"""Every chart of a small built site: a valid Vega-Lite specification whose data files exist.

The site is read as a browser would get it: each chart's specification from its page,
the shared datasets from the script files the page loads, the downloads from their
links. Each chart must validate against the Vega-Lite schema once its datasets are
filled in, and draw exactly the rows of the CSV files it offers.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest

from moopt.charts.base import VEGA_CONFIG, expand_rows, spec_data_names
from moopt.charts.web import validate_spec
from factories import small_build

pytestmark = pytest.mark.slow

# Pages pass through nbconvert, which may reorder attributes and change their quotes.
ATTRIBUTE = re.compile(r"""([\w-]+)=("[^"]*"|'[^']*')""")
FIGURE = re.compile(r"<figure ([^>]*)>(.*?)</figure>", re.S)
HOLDER = re.compile(r"<div ([^>]*\bclass=[\"']moopt-vega[\"'][^>]*)>")
SPEC = re.compile(r"<script [^>]*class=[\"']moopt-vega-spec[\"'][^>]*>(.*?)</script>", re.S)
SCRIPT_SRC = re.compile(r"<script [^>]*\bsrc=[\"']([^\"']+)[\"']")
DOWNLOAD = re.compile(r"<a ([^>]*\bclass=[\"']moopt-chart-csv[\"'][^>]*)>")
DATA_SCRIPT = re.compile(r'\(window\.(MOOPT_DATA|MOOPT_SPECS)=window\.\1\|\|\{\}\)\[("[^"]+")\]=(.*);\s*', re.S)


def attributes(text: str) -> dict[str, str]:
    return {name: html.unescape(value[1:-1]) for name, value in ATTRIBUTE.findall(text)}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    project = small_build(tmp_path_factory.mktemp("site_charts"), "--themes", "antimicrobials,respiratory",
                          "--renderer", "builtin", orgs=2)
    return project / "outputs" / "site"


def _page_scripts(page: Path, text: str) -> tuple[dict, dict]:
    """What the page's shared scripts put in window.MOOPT_DATA and window.MOOPT_SPECS."""
    found = {"MOOPT_DATA": {}, "MOOPT_SPECS": {}}
    for src in SCRIPT_SRC.findall(text):
        path = (page.parent / unquote(html.unescape(src))).resolve()
        assert path.is_file(), f"{page.name}: script {src} does not exist"
        if "/csv/shared/" not in path.as_posix():
            continue
        match = DATA_SCRIPT.fullmatch(path.read_text(encoding="utf-8"))
        assert match, f"{src} is not a moopt data or specification script"
        found[match.group(1)][json.loads(match.group(2))] = json.loads(match.group(3))
    return found["MOOPT_DATA"], found["MOOPT_SPECS"]


def test_every_chart_has_a_valid_specification_whose_data_files_exist(site):
    pages = sorted(site.rglob("*.html"))
    charts_seen = 0
    shared_files = set()
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if "moopt-vega-spec" not in text:
            continue
        assert "assets/vega.js" in text and "assets/moopt-charts.js" in text
        data, templates = _page_scripts(page, text)
        for figure_attributes, figure in FIGURE.findall(text):
            chart_id = attributes(figure_attributes)["id"]
            downloads = [(page.parent / unquote(attributes(a)["href"])).resolve() for a in DOWNLOAD.findall(figure)]
            for path in downloads:
                assert path.is_file(), f"{page.name} {chart_id}: download {path} missing"
            holder = HOLDER.search(figure)
            if holder is None:  # a chart with nothing to draw says so and offers its (empty) data
                assert "moopt-chart-empty" in figure_attributes
                continue
            holder = attributes(holder.group(1))
            part = json.loads(SPEC.search(figure).group(1))
            template = holder.get("data-moopt-template")
            if template:
                assert template in templates, f"{page.name} {chart_id}: template {template} not loaded"
                spec = {**templates[template], **part}
            else:
                spec = part
            spec["datasets"] = {name: expand_rows(rows) for name, rows in spec.get("datasets", {}).items()}
            for name, key in json.loads(holder.get("data-moopt-shared", "{}")).items():
                assert key in data, f"{page.name} {chart_id}: shared dataset {key} not loaded by the page"
                spec["datasets"][name] = expand_rows(data[key])
                shared_files.add(key)
            assert spec_data_names(spec) <= set(spec["datasets"]), (page.name, chart_id)
            spec["config"] = VEGA_CONFIG
            errors = validate_spec(spec)
            assert not errors, f"{page.name} {chart_id}: {errors[:3]}"
            # Each dataset is one download, and the chart draws exactly its rows.
            assert len(downloads) == len(spec["datasets"]), (page.name, chart_id)
            row_counts = sorted(len(rows) for rows in spec["datasets"].values())
            csv_counts = sorted(len(pd.read_csv(path)) for path in downloads)
            assert row_counts == csv_counts, (page.name, chart_id, row_counts, csv_counts)
            assert spec.get("description"), (page.name, chart_id)  # the alt text, as ARIA description
            charts_seen += 1
    assert charts_seen >= 40
    assert shared_files, "no chart used a shared national dataset"


def test_shared_national_rows_are_stored_once_for_the_site(site):
    shared = sorted(p for p in (site / "csv" / "shared").glob("*.js") if not p.name.startswith("spec."))
    keys = [path.name.rsplit(".", 2)[0] for path in shared]
    assert keys and len(keys) == len(set(keys))  # one file per indicator, level, period and kind
    per_page = list((site / "csv" / "sub_icb").rglob("*_peers.csv"))
    assert per_page == []  # all organisations' values are never copied into each page's folder
