"""End to end: the small synthetic set through store, engine, theme notebooks and site."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from factories import copy_project
from moopt.cli import main
from moopt.site import check_links

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project folder with the repository's notebooks and parameters, built on small synthetic data."""
    folder = copy_project(tmp_path_factory.mktemp("project"))
    return folder


@pytest.fixture(scope="module")
def built(project) -> Path:
    import os

    cwd = os.getcwd()
    os.chdir(project)
    try:
        assert main(["synth", "--scale", "small"]) == 0
        store = project / "outputs" / "store" / "moopt.duckdb"
        # Build two sub-ICB locations and two themes, with papermill starting a kernel per notebook.
        codes = _first_codes(project, 2)
        status = main(["build", "--orgs", ",".join(codes), "--themes", "antimicrobials,safety,transfer_of_care",
                       "--runner", "papermill"])
        assert status == 0
        assert store.exists()
    finally:
        os.chdir(cwd)
    return project / "outputs"


def _first_codes(project: Path, n: int) -> list[str]:
    mapping = pd.read_csv(project / "outputs/data/synthetic/organisations/gp-reg-pat-prac-map.csv")
    return sorted(mapping["SUB_ICB_LOCATION_CODE"].unique())[:n]


def _sub_icbs(manifest: dict) -> list[dict]:
    """The run's own organisations (its ICBs and regions have pages too)."""
    return [org for org in manifest["organisations"] if org["level"] == "sub_icb"]


def test_site_links_every_organisation_and_all_links_resolve(built):
    manifest = json.loads((built / "run_manifest.json").read_text())
    listing = (built / "site" / "orgs" / "index.html").read_text()
    assert len(_sub_icbs(manifest)) == 2
    assert {org["level"] for org in manifest["organisations"]} == {"region", "icb", "sub_icb"}
    for org in manifest["organisations"]:
        assert f"{org['level']}/{org['code']}/index.html" in listing
        for theme in ("antimicrobials", "safety"):
            page = built / "site" / "orgs" / org["level"] / org["code"] / f"{theme}.html"
            html = page.read_text()
            # real charts: Vega-Lite specifications with their captions and data downloads
            assert "moopt-vega-spec" in html and "moopt-chart-caption" in html and "moopt-chart-csv" in html
            assert "SYNTHETIC DATA" in html.upper()
    assert check_links(built / "site") == []
    assert (built / "site" / "methodology" / "AMR01.html").exists()


def test_every_notebook_ran_and_ingest_accounts_for_every_row(built):
    manifest = json.loads((built / "run_manifest.json").read_text())
    assert all(nb["status"] == "ok" for nb in manifest["notebooks"])
    # themes + summary per organisation (the two sub-ICB locations and the ICBs and regions above), + England
    assert len(manifest["notebooks"]) == len(manifest["organisations"]) * (3 + 1) + 1
    for report in manifest["ingest"]:
        if not report["skipped"]:
            assert report["rows_read"] == report["rows_accepted"] + report["rows_rejected"]


def test_chart_csv_is_exactly_the_computed_indicator_values(built):
    manifest = json.loads((built / "run_manifest.json").read_text())
    code = _sub_icbs(manifest)[0]["code"]
    trend = pd.read_csv(built / "csv" / "sub_icb" / code / "antimicrobials" / "AMR01_trend.csv")
    org_series = trend[trend["series"] == "organisation"].sort_values("period")
    con = duckdb.connect(str(built / "store" / "moopt.duckdb"), read_only=True)
    expected = con.execute(
        "SELECT period, value FROM indicator_values WHERE indicator_id = 'AMR01' AND org_level = 'sub_icb' "
        "AND org_code = ? AND period_type = 'rolling_12m' ORDER BY period", [code]).fetchdf()
    con.close()
    assert len(org_series) == len(expected) > 0
    # downloads hold 6 significant figures: a relative error of at most 5e-6
    assert org_series["value"].to_numpy() == pytest.approx(expected["value"].to_numpy(), rel=5e-6)
    # The value is computed from data, in a plausible range for items per STAR-PU a year.
    assert 0.5 < expected["value"].iloc[-1] < 1.5


def test_unknown_organisation_code_is_a_clear_error(project, capsys):
    import os

    cwd = os.getcwd()
    os.chdir(project)
    try:
        status = main(["build", "--orgs", "NOPE1", "--themes", "safety", "--no-site"])
    finally:
        os.chdir(cwd)
    assert status == 2
    assert re.search(r"Unknown sub-icb location code\(s\): NOPE1", capsys.readouterr().err, re.I)


def test_benchmarked_table_has_intervals_and_comparisons(built):
    con = duckdb.connect(str(built / "store" / "moopt.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT indicator_id, value, lower_95, upper_95, lower_99_8, upper_99_8, comparison_95, "
        "peer_value FROM indicator_results WHERE org_level = 'sub_icb' AND period_type = 'rolling_12m'").fetchdf()
    con.close()
    with_ci = rows[rows.lower_95.notna()]
    assert len(with_ci) > 0
    assert (with_ci.lower_99_8 <= with_ci.lower_95).all() and (with_ci.lower_95 <= with_ci.value).all()
    assert (with_ci.value <= with_ci.upper_95).all() and (with_ci.upper_95 <= with_ci.upper_99_8).all()
    assert set(rows.comparison_95.dropna()) <= {"higher", "similar", "lower"}
    # ADQ and cost indicators get no Poisson interval.
    assert rows.loc[rows.indicator_id == "SAF02", "lower_95"].isna().all()
    assert rows["peer_value"].notna().any()


def test_theme_page_charts_and_summary_page(built):
    manifest = json.loads((built / "run_manifest.json").read_text())
    code = _sub_icbs(manifest)[0]["code"]
    folder = built / "csv" / "sub_icb" / code / "antimicrobials"
    for chart in ("trend", "practices", "spc"):  # this organisation's own rows
        assert (folder / f"AMR01_{chart}.csv").exists(), chart
    # Every organisation's values (peers and funnel charts) are one shared download per period.
    shared = sorted((built / "csv" / "shared").glob("AMR01.sub_icb.rolling_12m.*.values.*.csv"))
    assert len(shared) == 1 and code in pd.read_csv(shared[0])["org_code"].tolist()
    spc = pd.read_csv(folder / "AMR01_spc.csv")
    con = duckdb.connect(str(built / "store" / "moopt.duckdb"), read_only=True)
    raw = con.execute("SELECT value FROM indicator_values WHERE indicator_id = 'AMR01' AND org_level = 'sub_icb' "
                      "AND org_code = ? AND period_type = 'month' ORDER BY period", [code]).fetchdf()
    con.close()
    values = spc[spc["series"] == "value"]["value"].to_numpy() if "series" in spc else spc["value"].to_numpy()
    assert len(values) == len(raw)
    assert not (abs(values - raw["value"].to_numpy()) < 1e-12).all()  # seasonally adjusted, not raw
    summary = (built / "site" / "orgs" / "sub_icb" / code / "summary.html").read_text()
    assert "antimicrobials.html#AMR01" in summary and "moopt-vega-spec" in summary
    page = (built / "site" / "orgs" / "sub_icb" / code / "antimicrobials.html").read_text().lower()
    for judgemental in ("failing", "poor performance", "league table position"):
        assert judgemental not in page


def test_transfer_of_care_comparison_from_supplied_data(built):
    manifest = json.loads((built / "run_manifest.json").read_text())
    code = _sub_icbs(manifest)[0]["code"]
    table = pd.read_csv(built / "csv" / "sub_icb" / code / "transfer_of_care" / "TOC03_by_group.csv")
    england = table[table["area"] == "England"].set_index("group")
    assert set(england.index) == {"completed", "not_completed"}
    for group, row in england.iterrows():
        assert row["lower_95"] <= row["value"] <= row["upper_95"]
        # downloads hold 6 significant figures
        assert row["value"] == pytest.approx(100 * row["numerator"] / row["denominator"], rel=1e-5)
    # The synthetic data carry the published finding: fewer readmissions after completed follow-up.
    assert england.loc["completed", "value"] < england.loc["not_completed", "value"]


def test_indicators_check_reports_coverage(project, built, capsys):
    import os

    cwd = os.getcwd()
    os.chdir(project)
    try:
        status = main(["indicators", "check"])
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "47 indicator definitions valid" in out
    assert re.search(r"AMR05 numerator: \d+ BNF codes", out) and "TOC03 supplied:" in out
    assert "No problems found." in out
