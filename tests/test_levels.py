"""Every level in one site: pages for the levels above the run's, breadcrumbs up, lists down.

A run at sub-ICB level also builds the pages of the ICBs and regions that contain its
sub-ICB locations (``organisations.levels_above``, on by default). Each organisation's
page names and links the organisations above it, and lists the ones below it with
registered patients and verdict counts that must equal what the results say.
"""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from factories import copy_project, first_sub_icb_codes

from moopt.config import ParameterError, load_config


# -- the parameter ---------------------------------------------------------------------------------------

def _config(tmp_path: Path, organisations: str):
    params = tmp_path / "run.yml"
    params.write_text(f"organisations: {organisations}\n")
    return load_config(params)


def test_levels_above_are_on_by_default_up_to_region(tmp_path):
    assert _config(tmp_path, "{level: sub_icb}").page_levels == ("region", "icb", "sub_icb")
    assert _config(tmp_path, "{level: pcn}").page_levels == ("region", "icb", "sub_icb", "pcn")
    assert _config(tmp_path, "{level: region}").page_levels == ("region",)


def test_levels_above_can_be_turned_off_and_groups_have_none(tmp_path):
    assert _config(tmp_path, "{level: icb, levels_above: false}").page_levels == ("icb",)
    (tmp_path / "groups.csv").write_text("practice_code,group_code,group_name\n")
    assert _config(tmp_path, "{level: group, groupings: groups.csv}").page_levels == ("group",)


def test_levels_above_must_be_true_or_false(tmp_path):
    with pytest.raises(ParameterError, match="levels_above must be true"):
        _config(tmp_path, "{levels_above: 'yes please'}")


# -- a built site ----------------------------------------------------------------------------------------

class _Links(HTMLParser):
    """The breadcrumb entries (text, href or None) and every table row of a page."""

    def __init__(self):
        super().__init__()
        self.crumbs: list[tuple[str, str | None]] = []
        self.rows: list[list[str]] = []
        self._in_crumbs = self._in_row = self._in_cell = False
        self._href: str | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "nav" and attrs.get("aria-label") == "Breadcrumb":
            self._in_crumbs = True
        elif self._in_crumbs and tag == "li":
            self._href, self._text = None, ""
        elif self._in_crumbs and tag == "a":
            self._href = attrs.get("href")
        elif tag == "tr":
            self._in_row, self.rows = True, [*self.rows, []]
        elif self._in_row and tag == "td":
            self._in_cell, self._text = True, ""

    def handle_endtag(self, tag):
        if tag == "nav" and self._in_crumbs:
            self._in_crumbs = False
        elif self._in_crumbs and tag == "li":
            self.crumbs.append((self._text.strip(), self._href))
        elif tag == "td" and self._in_cell:
            self._in_cell = False
            self.rows[-1].append(self._text.strip())
        elif tag == "tr":
            self._in_row = False

    def handle_data(self, data):
        if self._in_crumbs or self._in_cell:
            self._text += data


def _parse(path: Path) -> _Links:
    page = _Links()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """One sub-ICB location, one theme: its pages, its ICB's and its region's."""
    from moopt.cli import main

    project = copy_project(tmp_path_factory.mktemp("levels_project"))
    cwd = os.getcwd()
    os.chdir(project)
    try:
        assert main(["synth", "--scale", "small"]) == 0
        code = first_sub_icb_codes(project)[0]
        assert main(["build", "--orgs", code, "--themes", "antimicrobials", "--renderer", "builtin"]) == 0
    finally:
        os.chdir(cwd)
    outputs = project / "outputs"
    con = duckdb.connect(str(outputs / "store" / "moopt.duckdb"), read_only=True)
    try:
        icb, region = con.execute("SELECT any_value(icb_code), any_value(region_code) FROM organisations "
                                  "WHERE sub_icb_code = ?", [code]).fetchone()
    finally:
        con.close()
    return {"outputs": outputs, "site": outputs / "site", "sub_icb": code, "icb": icb, "region": region}


def test_the_levels_above_get_pages_for_the_parents_only(built):
    site = built["site"]
    assert sorted(p.name for p in (site / "orgs" / "sub_icb").iterdir()) == [built["sub_icb"]]
    assert sorted(p.name for p in (site / "orgs" / "icb").iterdir()) == [built["icb"]]
    assert sorted(p.name for p in (site / "orgs" / "region").iterdir()) == [built["region"]]
    for level in ("region", "icb", "sub_icb"):
        folder = site / "orgs" / level / built[level]
        assert (folder / "index.html").is_file() and (folder / "summary.html").is_file()
        assert (folder / "antimicrobials.html").is_file()


def test_breadcrumbs_lead_up_through_every_level(built):
    site = built["site"]
    page = site / "orgs" / "sub_icb" / built["sub_icb"] / "antimicrobials.html"
    hrefs = [href for _, href in _parse(page).crumbs]
    assert hrefs[-1] is None  # the page itself
    resolved = [(page.parent / h).resolve().relative_to(site.resolve()).as_posix() for h in hrefs[:-1]]
    assert resolved == ["index.html", "orgs/index.html", f"orgs/region/{built['region']}/index.html",
                        f"orgs/icb/{built['icb']}/index.html", f"orgs/sub_icb/{built['sub_icb']}/index.html"]
    icb_crumbs = _parse(site / "orgs" / "icb" / built["icb"] / "index.html").crumbs
    assert [h for _, h in icb_crumbs][-2:] == [f"../../../orgs/region/{built['region']}/index.html", None]


def _latest(outputs: Path) -> pd.DataFrame:
    return pd.read_csv(outputs / "site" / "downloads" / "moopt-results-latest.csv", dtype={"org_code": str})


def _expected_counts(latest: pd.DataFrame, level: str, parent_column: str, parent: str) -> dict[str, list[int]]:
    """Per child: compared, similar, better, worse, differs, not compared, from the bulk download."""
    rows = latest[(latest["org_level"] == level) & (latest[parent_column] == parent)]
    expected = {}
    for code, group in rows.groupby("org_code"):
        side, assessment = group["comparison_99_8"], group["assessment_99_8"]
        differs = side.notna() & (side != "similar")
        expected[code] = [int(side.notna().sum()), int((side == "similar").sum()),
                          int((differs & (assessment == "better")).sum()),
                          int((differs & (assessment == "worse")).sum()),
                          int((differs & ~assessment.isin(["better", "worse"])).sum()),
                          int(side.isna().sum())]
    return expected


def _table_counts(rows: list[list[str]]) -> dict[str, list[int]]:
    # Organisation, Code, Registered patients, then the six counts.
    return {row[1]: [int(cell.replace(",", "")) for cell in row[3:9]] for row in rows if len(row) == 9}


def test_the_icb_page_lists_its_sub_icb_locations_with_their_verdict_counts(built):
    outputs = built["outputs"]
    latest = _latest(outputs)
    page = _parse(outputs / "site" / "orgs" / "icb" / built["icb"] / "index.html")
    shown = _table_counts(page.rows)
    expected = _expected_counts(latest, "sub_icb", "icb_code", built["icb"])
    assert shown == expected and built["sub_icb"] in shown
    assert sum(shown[built["sub_icb"]][1:]) == shown[built["sub_icb"]][0] + shown[built["sub_icb"]][5]


def test_the_sub_icb_page_lists_its_pcns_and_practices_with_patients(built):
    outputs = built["outputs"]
    site = outputs / "site"
    path = site / "orgs" / "sub_icb" / built["sub_icb"] / "index.html"
    text = path.read_text(encoding="utf-8")
    assert text.index("Primary care networks in") < text.index("GP practices in")
    rows = _parse(path).rows
    con = duckdb.connect(str(outputs / "store" / "moopt.duckdb"), read_only=True)
    try:
        practices = dict(con.execute(
            "SELECT o.practice_code, sum(l.patients) FROM list_size l JOIN organisations o USING (practice_code) "
            "WHERE l.month = (SELECT max(month) FROM list_size) AND o.sub_icb_code = ? GROUP BY 1",
            [built["sub_icb"]]).fetchall())
        pcns = {r[0] for r in con.execute("SELECT DISTINCT pcn_code FROM organisations WHERE sub_icb_code = ?",
                                          [built["sub_icb"]]).fetchall()}
    finally:
        con.close()
    shown = {row[1]: row for row in rows if len(row) == 9}
    assert pcns <= set(shown)
    for code, patients in practices.items():
        assert shown[code][2] == f"{patients:,.0f}"
    # Practices are not in the bulk download of a sub-ICB run: take their rows from the store, in
    # each indicator's period of the download (its latest of its main period type).
    latest = _latest(outputs)
    periods = latest[latest["org_level"] == "england"][["indicator_id", "period", "period_type"]]
    con = duckdb.connect(str(outputs / "store" / "moopt.duckdb"), read_only=True)
    try:
        stored = con.execute("SELECT * FROM indicator_results WHERE org_level = 'practice' AND sub_icb_code = ?",
                             [built["sub_icb"]]).fetchdf()
    finally:
        con.close()
    stored["period"] = stored["period"].astype(str).str[:10]
    practice_rows = stored.merge(periods, on=["indicator_id", "period", "period_type"])
    counts = _table_counts(rows)
    assert {c: counts[c] for c in practices} == _expected_counts(practice_rows, "practice", "sub_icb_code",
                                                                 built["sub_icb"])


def test_the_home_page_lists_the_regions_and_the_organisations_page_every_level(built):
    site = built["site"]
    home = _parse(site / "index.html")
    assert built["region"] in _table_counts(home.rows)
    text = (site / "orgs" / "index.html").read_text(encoding="utf-8")
    positions = [text.index(heading) for heading in ("NHS England regions (1)", "Integrated care boards (1)",
                                                     "Sub-ICB locations (1)")]
    assert positions == sorted(positions)


def test_a_run_without_levels_above_builds_its_own_level_only(built, tmp_path):
    from moopt.config import load_config
    from moopt.pipeline import organisations_for_run
    from moopt.store import Store

    params = tmp_path / "run.yml"
    params.write_text(f"organisations: {{codes: [{built['sub_icb']}], levels_above: false}}\n")
    config = load_config(params)
    store_copy = tmp_path / "store.duckdb"
    store_copy.write_bytes((built["outputs"] / "store" / "moopt.duckdb").read_bytes())
    with Store(store_copy) as store:
        assert [(o["level"], o["code"]) for o in organisations_for_run(store, config)] == [
            ("sub_icb", built["sub_icb"])]
        config.levels_above = True
        found = organisations_for_run(store, config)
    assert [(o["level"], o["code"]) for o in found] == [
        ("region", built["region"]), ("icb", built["icb"]), ("sub_icb", built["sub_icb"])]
    assert [a["level"] for a in found[-1]["ancestors"]] == ["region", "icb"]
    assert found[1]["parent_code"] == built["region"] and found[1]["ancestors"][0]["code"] == built["region"]


def test_the_theme_page_sets_every_organisation_against_every_indicator(built):
    """The overview ("tartan rug"): each cell the latest value with the verdict as a shape and a word."""
    from moopt.site.theme_overview import verdict_parts

    outputs = built["outputs"]
    latest = _latest(outputs)
    page = (outputs / "site" / "themes" / "antimicrobials.html").read_text(encoding="utf-8")
    assert "Every organisation at a glance" in page
    manifest_indicators = [i["id"] for t in __import__("json").loads(
        (outputs / "run_manifest.json").read_text())["themes"] if t["id"] == "antimicrobials"
        for i in t["indicators"]]
    for level in ("region", "icb", "sub_icb"):
        start = page.index(f'id="moopt-overview-{level}"')
        rows = _parse_fragment(page[start:page.index("</table>", start)])
        code = built[level]
        row = next(r for r in rows if f"({code})" in r[0])
        assert len(row) == 1 + len(manifest_indicators)
        for indicator_id, cell in zip(manifest_indicators, row[1:]):
            stored = latest[(latest["org_level"] == level) & (latest["org_code"] == code)
                            & (latest["indicator_id"] == indicator_id)]
            if stored.empty or pd.isna(stored["value"].iloc[0]):
                assert cell == "no value"
                continue
            shape, word, _ = verdict_parts(stored["comparison_99_8"].iloc[0], stored["assessment_99_8"].iloc[0])
            assert cell.endswith(f"{shape} {word}"), (level, indicator_id, cell)


def _parse_fragment(fragment: str) -> list[list[str]]:
    page = _Links()
    page.feed(fragment)
    return [r for r in page.rows if r]
