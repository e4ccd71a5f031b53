"""The national results stage: one verdict, stored once, shown the same way everywhere."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from moopt.indicators.definitions import get_indicator
from moopt.results import verdict_columns
from moopt.tables import TABLES, check_columns, table_contract_markdown

ROOT = Path(__file__).resolve().parents[1]


# -- the verdict, by hand ----------------------------------------------------------------------------

def _rows(**columns) -> pd.DataFrame:
    base = {"org_level": "sub_icb", "value": 1.0, "england_value": 1.0, "kind": "rate",
            "improvement_direction": "decrease", "funnel_flag_95": "inside", "funnel_flag_99_8": "inside"}
    n = max(len(v) for v in columns.values())
    return pd.DataFrame({k: columns.get(k, [v] * n) for k, v in base.items()})


def test_verdict_reads_the_funnel_position_with_the_direction():
    frame = _rows(funnel_flag_95=["above", "above", "below", "inside", "above", "below"],
                  funnel_flag_99_8=["above", "inside", "below", "inside", "above", "below"],
                  improvement_direction=["decrease", "decrease", "decrease", "decrease", "increase", "neutral"])
    out = verdict_columns(frame, pd.Series(10, index=frame.index))
    assert out["comparison_99_8"].tolist() == ["higher", "similar", "lower", "similar", "higher", "lower"]
    assert out["comparison_95"].tolist() == ["higher", "higher", "lower", "similar", "higher", "lower"]
    # higher is worse when the preferred direction is a decrease, better for an increase, and
    # stays "lower" when there is no preferred direction
    assert out["assessment_99_8"].tolist() == ["worse", "similar", "better", "similar", "better", "lower"]
    assert out["not_compared_reason"].isna().all()


def test_no_verdict_says_why_in_words():
    frame = _rows(org_level=["england", "sub_icb", "sub_icb", "sub_icb", "sub_icb"],
                  value=[1.0, np.nan, 1.0, 1.0, 1.0],
                  england_value=[1.0, 1.0, np.nan, 1.0, 1.0],
                  kind=["rate", "rate", "rate", "rate", "none"],
                  funnel_flag_95=[None] * 5, funnel_flag_99_8=[None] * 5)
    sizes = pd.Series([10, 10, 10, 2, 10])
    out = verdict_columns(frame, sizes)
    reasons = out["not_compared_reason"].tolist()
    assert reasons[0].startswith("England is the benchmark")
    assert reasons[1].startswith("No value")
    assert reasons[2].startswith("No England value")
    assert reasons[3].startswith("Fewer than 3 organisations")
    assert "not counts" in reasons[4]
    assert out["comparison_99_8"].isna().all() and out["assessment_99_8"].isna().all()


# -- the table contract ---------------------------------------------------------------------------------

def test_docs_table_contract_is_generated_from_the_module():
    assert (ROOT / "docs" / "tables.md").read_text() == table_contract_markdown(), \
        "docs/tables.md is stale: run `python -m moopt.tables > docs/tables.md`"


def test_pages_and_notebooks_compute_no_statistics():
    """Pages select, draw and explain; every statistic comes from the results stage."""
    offenders = []
    sources = [ROOT / "src" / "moopt" / "report.py"]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.startswith("moopt.stats") or (node.module == "moopt" and any(
                        a.name == "stats" for a in node.names))):
                offenders.append(path.name)
            if isinstance(node, ast.Import) and any(a.name.startswith("moopt.stats") for a in node.names):
                offenders.append(path.name)
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        code = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"]
                         if c["cell_type"] == "code")
        if re.search(r"moopt\.stats|from moopt import .*stats|stats\.calculate", code):
            offenders.append(notebook.name)
    assert offenders == []


# -- a small build: summary, theme page and funnel agree everywhere --------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from moopt.cli import main

    folder = tmp_path_factory.mktemp("results_project")
    for name in ("notebooks", "parameters"):
        shutil.copytree(ROOT / name, folder / name)
    shutil.copy(ROOT / "_quarto.yml", folder / "_quarto.yml")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["synth", "--scale", "small"]) == 0
        assert main(["build", "--themes", "antimicrobials,safety,cardiovascular", "--no-site"]) == 0
    finally:
        os.chdir(cwd)
    return folder / "outputs"


FUNNEL_WORDS = {"above 99.8% limit": "higher", "below 99.8% limit": "lower"}


def _page_text(path: Path) -> str:
    """Every text output of an executed notebook, joined."""
    cells = json.loads(path.read_text())["cells"]
    parts = []
    for cell in cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            parts.append("".join(data.get("text/html", data.get("text/plain", ""))))
            parts.append("".join(output.get("text", "")))
    return "\n".join(parts)


@pytest.mark.slow
def test_summary_theme_page_and_funnel_agree_for_every_organisation_and_indicator(built):
    con = duckdb.connect(str(built / "store" / "moopt.duckdb"), read_only=True)
    manifest = json.loads((built / "run_manifest.json").read_text())
    themes = {t["id"]: [i["id"] for i in t["indicators"]] for t in manifest["themes"] if t["id"] != "summary"}
    checked = 0
    compared = set()
    for org in manifest["organisations"]:
        code = org["code"]
        spine = pd.read_csv(built / "csv" / "sub_icb" / code / "summary" / "summary_spine.csv")
        for theme, ids in themes.items():
            page = _page_text(built / "notebooks" / "sub_icb" / code / f"{theme}.ipynb")
            glance = pd.read_csv(built / "csv" / "sub_icb" / code / theme / "summary.csv")
            for ind in ids:
                period_type = get_indicator(ind).main_period_type
                row = con.execute(
                    "SELECT * FROM indicator_results WHERE indicator_id = ? AND org_level = 'sub_icb' "
                    "AND org_code = ? AND period_type = ? ORDER BY period DESC LIMIT 1",
                    [ind, code, period_type]).fetchdf()
                if row.empty or pd.isna(row["value"].iloc[0]):
                    continue
                r = row.iloc[0]
                verdict = r["comparison_99_8"]
                # 1. the theme page's sentence
                if isinstance(verdict, str) and verdict != "similar":
                    assert f"Compared with England it is {verdict}" in page, (code, ind)
                elif isinstance(verdict, str):
                    assert "within the 99.8% funnel limits" in page, (code, ind)
                else:
                    assert "Not compared with England" in page, (code, ind)
                # 2. the funnel chart: the highlighted point's position
                funnel_csv = built / "csv" / "sub_icb" / code / theme / f"{ind}_funnel.csv"
                if isinstance(verdict, str):
                    funnel = pd.read_csv(funnel_csv)
                    own = funnel[funnel["series"] == "highlighted_organisation"]["position"].iloc[0]
                    assert FUNNEL_WORDS.get(own, "similar") == verdict, (code, ind, own, verdict)
                    compared.add(verdict)
                # 3. the at-a-glance table and 4. the summary spine
                label = r["assessment_99_8"] if isinstance(r["assessment_99_8"], str) else None
                cell = glance.loc[glance["Indicator"].str.startswith(ind + " "),
                                  "Compared with England (99.8% funnel)"].iloc[0]
                assert (cell == label) if label else cell.startswith("not compared"), (code, ind, cell)
                spine_row = spine[spine["indicator_id"] == ind]
                if len(spine_row):
                    shown = spine_row["assessment"].iloc[0]
                    assert (shown == label) if label else (pd.isna(shown) or "not" in str(shown)), (code, ind)
                checked += 1
    con.close()
    assert checked >= 6 * 10
    assert {"similar"} < compared | {"similar"}  # the build has verdicts other than "similar" too


@pytest.mark.slow
def test_built_store_matches_the_table_contract(built):
    con = duckdb.connect(str(built / "store" / "moopt.duckdb"), read_only=True)
    try:
        for name in TABLES:
            check_columns(con, name)
        facts = con.execute("SELECT period_end, org_level, synthetic FROM run_facts").fetchall()
        assert len(facts) == 1 and facts[0][1] == "sub_icb" and facts[0][2] is True
        # every funnel of the level is centred on England's value
        off = con.execute(
            "SELECT count(*) FROM funnel_parameters f JOIN indicator_results e ON e.org_level = 'england' "
            "AND e.indicator_id = f.indicator_id AND e.period = f.period AND e.period_type = f.period_type "
            "WHERE abs(f.funnel_target - e.value) > 1e-9 * abs(e.value)").fetchall()[0][0]
        assert off == 0
    finally:
        con.close()


# The national-priority themes' presentations are not yet prescribed with realistic variation by
# the synthetic generator (a parallel branch adds them); until then their series are left out here.
NOT_YET_SYNTHESISED = ("national_mo", "amr_action_plan")


@pytest.mark.slow
def test_synthetic_spc_shows_mostly_ordinary_variation(built):
    from moopt.indicators import load_indicators

    con = duckdb.connect(str(built / "store" / "moopt.duckdb"), read_only=True)
    skip = [i.id for i in load_indicators() if i.theme in NOT_YET_SYNTHESISED] or ["-"]
    keep = f"WHERE indicator_id NOT IN ({', '.join(repr(i) for i in skip)})"
    share = con.execute(
        "SELECT avg(CASE WHEN special >= 0.5 THEN 1 ELSE 0 END) FROM (SELECT indicator_id, org_code, "
        "avg(CASE WHEN spc_point_type LIKE 'special%' OR spc_point_type LIKE 'neutral%' THEN 1 ELSE 0 END) "
        f"AS special FROM spc_points {keep} GROUP BY ALL)").fetchall()[0][0]
    flat = con.execute(f"SELECT count(*) FROM (SELECT indicator_id, org_code FROM spc_points {keep} GROUP BY ALL "
                       "HAVING stddev_samp(value) = 0)").fetchall()[0][0]
    # Most series show ordinary variation. The synthetic data carry real steady shifts (DOAC share,
    # SGLT2 inhibitors and EPS uptake rise month on month, as they did nationally), whose SPC charts
    # rightly flag runs and trends; before the month-to-month noise (and STL of degree 0) over a
    # quarter of series flagged half their points on limits drawn around an almost straight line.
    assert share is not None and share < 0.2, f"{share:.0%} of SPC series flag half their points or more"
    # Seasonally adjusted series keep their month-to-month variation: none is a straight line
    # (a degree-1 seasonal fit on two cycles used to leave exact lines).
    adjusted = con.execute("SELECT indicator_id, org_code, period, value FROM spc_points "
                           f"{keep} AND seasonally_adjusted ORDER BY ALL").fetchdf()
    assert len(adjusted)
    for _, series in adjusted.groupby(["indicator_id", "org_code"]):
        bends = np.abs(np.diff(series["value"].to_numpy(), 2))
        assert bends.max() > 1e-6 * np.abs(series["value"]).mean()
    con.close()
    assert flat == 0
