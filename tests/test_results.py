"""The national results stage: one verdict, stored once, shown the same way everywhere."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from factories import small_build

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
    project = small_build(tmp_path_factory.mktemp("results_project"),
                          "--themes", "antimicrobials,safety,cardiovascular", "--no-site")
    return project / "outputs"


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
    levels = set()
    for org in manifest["organisations"]:  # every level's pages: regions, ICBs and sub-ICB locations
        code, level = org["code"], org["level"]
        levels.add(level)
        spine = pd.read_csv(built / "csv" / level / code / "summary" / "summary_spine.csv")
        for theme, ids in themes.items():
            page = _page_text(built / "notebooks" / level / code / f"{theme}.ipynb")
            glance = pd.read_csv(built / "csv" / level / code / theme / "summary.csv")
            for ind in ids:
                period_type = get_indicator(ind).main_period_type
                row = con.execute(
                    "SELECT * FROM indicator_results WHERE indicator_id = ? AND org_level = ? "
                    "AND org_code = ? AND period_type = ? ORDER BY period DESC LIMIT 1",
                    [ind, level, code, period_type]).fetchdf()
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
                # (all organisations' values: one shared download per indicator, level and period,
                # which the page's funnel chart loads; the page highlights its own row)
                if isinstance(verdict, str):
                    shared = re.search(rf'src="(csv/shared/{ind}\.{level}\.[^"]*\.values\.[0-9a-f]+)\.js"', page)
                    assert shared, (code, ind)
                    funnel = pd.read_csv(built / f"{shared.group(1)}.csv", dtype={"org_code": str})
                    own = funnel.loc[funnel["org_code"] == code, "position"].iloc[0]
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
    assert checked >= 6 * 10 and levels == {"region", "icb", "sub_icb"}
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


@pytest.mark.slow
def test_synthetic_spc_shows_mostly_ordinary_variation(built):
    con = duckdb.connect(str(built / "store" / "moopt.duckdb"), read_only=True)
    # Series whose modelled change per year is not significant (its 95% interval spans 0). The
    # synthetic data also carry deliberate steady shifts (DOAC share, SGLT2 inhibitors, the Access
    # share, MDI share...), whose SPC charts rightly flag runs and trends, as real ones would.
    steady = con.execute(
        "SELECT s.indicator_id, s.org_code, avg(CASE WHEN spc_point_type <> 'common_cause' THEN 1 ELSE 0 END) "
        "AS special FROM spc_points s JOIN trends t USING (indicator_id, org_level, org_code) "
        "WHERE t.change_per_year_lower < 0 AND t.change_per_year_upper > 0 GROUP BY ALL").fetchdf()
    # Before the month-to-month noise (and STL of degree 0), a quarter of all series flagged half
    # their points, on limits drawn around almost straight lines.
    assert len(steady) >= 20
    share = (steady["special"] >= 0.5).mean()
    assert share < 0.1, f"{share:.0%} of steady SPC series flag half their points or more"
    # Monthly prescribing series are never flat (supplied ones, such as the share of practices
    # using EPS, can rightly sit at 100% throughout).
    flat = con.execute("SELECT count(*) FROM (SELECT indicator_id, org_code FROM spc_points "
                       "WHERE period_type = 'month' GROUP BY ALL HAVING stddev_samp(value) = 0)").fetchall()[0][0]
    assert flat == 0
    # Seasonally adjusted series keep their month-to-month variation: none is a straight line
    # (a degree-1 seasonal fit on two cycles used to leave exact lines).
    adjusted = con.execute("SELECT indicator_id, org_code, period, value FROM spc_points "
                           "WHERE seasonally_adjusted ORDER BY ALL").fetchdf()
    con.close()
    assert len(adjusted)
    for _, series in adjusted.groupby(["indicator_id", "org_code"]):
        bends = np.abs(np.diff(series["value"].to_numpy(), 2))
        assert bends.max() > 1e-6 * np.abs(series["value"]).mean()


def test_funnel_lines_have_one_row_per_size_when_every_denominator_is_equal():
    """Supplied shares often have one denominator for all organisations; the line is then one point."""
    from moopt.indicators.definitions import get_indicator
    from moopt.results import _funnel

    indicator = get_indicator("COM02")
    frame = pd.DataFrame({
        "indicator_id": "COM02", "org_level": "sub_icb", "org_code": ["A", "B", "C", "D"],
        "period": pd.Timestamp("2026-03-01"), "period_type": indicator.main_period_type,
        "numerator": [8.0, 9.0, 10.0, 7.0], "denominator": 10.0, "multiplier": 100.0,
        "england_value": 85.0})
    frame["value"] = frame["numerator"] / frame["denominator"] * 100
    per_row, params, lines, sizes = _funnel(frame, indicator)
    assert len(params) == 1 and len(lines) == 1
    assert lines["denominator"].iloc[0] == pytest.approx(10.0)
    assert per_row["funnel_flag_95"].notna().all()
