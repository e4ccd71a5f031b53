"""Every chart of a small built site: a valid Vega-Lite specification whose data files exist.

The site is read as a browser would get it: each chart's specification from its page,
the shared datasets from the script files the page loads, the downloads from their
links. Each chart must validate against the Vega-Lite schema once its datasets are
filled in, and draw exactly the rows of the CSV files it offers.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest

from moopt.charts.base import VEGA_CONFIG, spec_data_names
from moopt.charts.web import validate_spec
from tests.factories import copy_project

pytestmark = pytest.mark.slow

HOLDER = re.compile(r'<div class="moopt-vega" data-moopt-shared="([^"]*)">\s*'
                    r'<script type="application/json" class="moopt-vega-spec">(.*?)</script>', re.S)
SCRIPT_SRC = re.compile(r'<script src="([^"]+)"></script>')
FIGURE = re.compile(r'<figure class="moopt-chart[^"]*" id="([^"]+)">(.*?)</figure>', re.S)
DOWNLOAD = re.compile(r'<a class="moopt-chart-csv" href="([^"]+)" download>')


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    from moopt.cli import main

    folder = copy_project(tmp_path_factory.mktemp("site_charts"))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["synth", "--scale", "small"]) == 0
        code = _first_two_codes(folder)
        assert main(["build", "--themes", "antimicrobials,respiratory", "--orgs", code,
                     "--renderer", "builtin"]) == 0
    finally:
        os.chdir(cwd)
    return folder / "outputs" / "site"


def _first_two_codes(folder: Path) -> str:
    mapping = pd.read_csv(folder / "outputs/data/synthetic/organisations/gp-reg-pat-prac-map.csv")
    return ",".join(sorted(mapping["SUB_ICB_LOCATION_CODE"].unique())[:2])


def _shared_store(page: Path, text: str) -> dict[str, list]:
    """What the page's data scripts put in window.MOOPT_DATA."""
    store = {}
    for src in SCRIPT_SRC.findall(text):
        path = (page.parent / unquote(html.unescape(src))).resolve()
        assert path.is_file(), f"{page.name}: script {src} does not exist"
        if "/csv/shared/" not in path.as_posix():
            continue
        body = path.read_text(encoding="utf-8")
        match = re.fullmatch(r'\(window\.MOOPT_DATA=window\.MOOPT_DATA\|\|\{\}\)\[("[^"]+")\]=(.*);\s*', body, re.S)
        assert match, f"{src} is not a moopt data script"
        store[json.loads(match.group(1))] = json.loads(match.group(2))
    return store


def test_every_chart_has_a_valid_specification_whose_data_files_exist(site):
    pages = sorted(site.rglob("*.html"))
    charts_seen = 0
    shared_files = set()
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if 'class="moopt-vega"' not in text:
            continue
        assert 'src="' in text and "assets/vega.js" in text and "assets/moopt-charts.js" in text
        store = _shared_store(page, text)
        for chart_id, figure in FIGURE.findall(text):
            holder = HOLDER.search(figure)
            downloads = [(page.parent / unquote(html.unescape(h))).resolve() for h in DOWNLOAD.findall(figure)]
            for path in downloads:
                assert path.is_file(), f"{page.name} {chart_id}: download {path} missing"
            if holder is None:  # a chart with nothing to draw says so and offers its (empty) data
                assert "moopt-chart-empty" in figure
                continue
            shared = json.loads(html.unescape(holder.group(1)))
            spec = json.loads(holder.group(2))
            for name, key in shared.items():
                assert key in store, f"{page.name} {chart_id}: shared dataset {key} not loaded by the page"
                spec.setdefault("datasets", {})[name] = store[key]
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
    shared = sorted((site / "csv" / "shared").glob("*.js"))
    keys = [path.name.rsplit(".", 2)[0] for path in shared]
    assert keys and len(keys) == len(set(keys))  # one file per indicator, level, period and kind
    per_page = list((site / "csv" / "sub_icb").rglob("*_peers.csv"))
    assert per_page == []  # all organisations' values are never copied into each page's folder
