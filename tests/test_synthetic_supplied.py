"""Synthetic supplied-indicator files: the tidy and QOF layouts of the contract, plausible and seeded.

The expected headers, measures, levels and financial years below are written out from the
supplied-file contract, not imported from the generator, so a drift in the generator fails here.
The last test loads every file through the store's own validation.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import moopt.atomic

from moopt.indicators.definitions import load_indicators
from moopt.sources import synthetic_supplied
from moopt.sources.synthetic import generate_synthetic
from moopt.sources.synthetic_supplied import generate_supplied
from moopt.store import Store

TIDY_HEADER = "INDICATOR_ID,ORG_LEVEL,ORG_CODE,PERIOD_START,PERIOD_END,BREAKDOWN,NUMERATOR,DENOMINATOR"
QOF_HEADER = "PRACTICE_CODE,INDICATOR_CODE,MEASURE,VALUE"
QOF_MEASURES = {"ACHIEVED_POINTS", "REGISTER", "NUMERATOR", "DENOMINATOR", "PCAS"}
PRACTICE_LEVEL = {"COM01", "COM02", "COM03", "COM04", "COM05"}
SUB_ICB_LEVEL = {"SAF10", "TOC01", "TOC02", "TOC03", "VUL01", "ADH01"}
QOF_FILE = re.compile(r"^ACHIEVEMENT_(\d{2})(\d{2})\.csv$")


@pytest.fixture(scope="module")
def supplied_set(tmp_path_factory):
    """The small synthetic set with its supplied files, as `moopt synth` makes it."""
    folder = tmp_path_factory.mktemp("synthetic")
    summary = generate_synthetic(folder, scale="small", seed=42)
    organisations = pd.read_csv(folder / "organisations" / "gp-reg-pat-prac-map.csv", dtype=str)
    result = generate_supplied(folder, organisations, summary["months"], seed=42)
    return folder, organisations, summary["months"], result


@pytest.fixture(scope="module")
def tidy(supplied_set) -> pd.DataFrame:
    folder = supplied_set[0]
    frames = [pd.read_csv(p, dtype={"ORG_CODE": str}).assign(file=p.name)
              for p in sorted((folder / "supplied").glob("*.csv")) if not QOF_FILE.match(p.name)]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def qof_files(supplied_set) -> dict[str, pd.DataFrame]:
    folder = supplied_set[0]
    return {p.name: pd.read_csv(p, dtype={"PRACTICE_CODE": str, "VALUE": float})
            for p in sorted((folder / "supplied").glob("ACHIEVEMENT_*.csv"))}


@pytest.fixture(scope="module")
def definitions():
    return {i.id: i for i in load_indicators() if i.is_supplied}


def test_file_headers_are_exactly_the_contract(supplied_set, qof_files):
    folder, _, _, result = supplied_set
    paths = sorted((folder / "supplied").glob("*.csv"))
    assert sorted(str(p.relative_to(folder)) for p in paths) == sorted(result["files"])
    for path in paths:
        first_line = path.read_text().split("\n", 1)[0]
        assert first_line == (QOF_HEADER if QOF_FILE.match(path.name) else TIDY_HEADER), path.name
    assert qof_files, "no QOF achievement file was written"
    assert not list((folder / "supplied").glob(".*")), "temporary files were left behind"


def test_every_supplied_indicator_is_present_at_its_level(tidy, qof_files, supplied_set, definitions):
    organisations = supplied_set[1]
    tidy_ids = {i for i, d in definitions.items() if d.supplied["source_layout"] == "tidy"}
    assert tidy_ids == PRACTICE_LEVEL | SUB_ICB_LEVEL
    assert set(tidy["INDICATOR_ID"]) == tidy_ids
    levels = tidy.groupby("INDICATOR_ID")["ORG_LEVEL"].unique()
    assert all(list(levels[i]) == ["practice"] for i in PRACTICE_LEVEL)
    assert all(list(levels[i]) == ["sub_icb"] for i in SUB_ICB_LEVEL)
    # Every organisation of the level, every indicator: practices and sub-ICBs as in the map.
    practices = set(organisations["PRACTICE_CODE"])
    sub_icbs = set(organisations["SUB_ICB_LOCATION_CODE"])
    for ident, rows in tidy[tidy["BREAKDOWN"] == "all"].groupby("INDICATOR_ID"):
        expected = practices if ident in PRACTICE_LEVEL else sub_icbs
        assert set(rows["ORG_CODE"]) == expected, ident
    # The QOF indicators: each file has exactly one code of every QOF-sourced definition.
    qof_defs = [d for d in definitions.values() if d.supplied["source_layout"] == "qof_achievement"]
    assert {d.id for d in qof_defs} == {"CVD10", "DIA10"}
    for name, frame in qof_files.items():
        codes = set(frame["INDICATOR_CODE"])
        for d in qof_defs:
            assert len(codes & set(d.supplied["qof_indicator_codes"])) == 1, (name, d.id)
        used = {c for d in qof_defs for c in d.supplied["qof_indicator_codes"]}
        assert codes - used, f"{name} has no QOF indicator that moopt must ignore"
        assert set(frame["PRACTICE_CODE"]) == practices


def test_periods_span_whole_months_matching_the_definition(tidy, definitions, supplied_set):
    months = supplied_set[2]
    start = pd.to_datetime(tidy["PERIOD_START"], format="%Y-%m-%d")
    end = pd.to_datetime(tidy["PERIOD_END"], format="%Y-%m-%d")
    assert (start.dt.day == 1).all()
    assert (end == end + pd.offsets.MonthEnd(0)).all(), "PERIOD_END must be the last day of a month"
    span = (end.dt.year - start.dt.year) * 12 + end.dt.month - start.dt.month + 1
    assert set(span) <= {1, 3, 12}
    expected_span = tidy["INDICATOR_ID"].map(
        lambda i: {"month": 1, "quarter": 3, "rolling_12m": 12}[definitions[i].supplied["period_type"]])
    assert (span == expected_span).all()
    # Calendar quarters that end within the months given, and all of them.
    quarter_ends = sorted({m for m in months if int(m[5:]) in (3, 6, 9, 12)})
    assert sorted(set(end.dt.strftime("%Y-%m"))) == quarter_ends


def test_breakdowns_sum_to_the_all_rows(tidy, definitions):
    key = ["INDICATOR_ID", "ORG_LEVEL", "ORG_CODE", "PERIOD_START", "PERIOD_END"]
    assert not tidy.duplicated(key + ["BREAKDOWN"]).any()
    parts = tidy[tidy["BREAKDOWN"] != "all"]
    assert set(parts["INDICATOR_ID"]) == {"TOC03"}
    for ident, rows in parts.groupby("INDICATOR_ID"):
        assert set(rows["BREAKDOWN"]) == set(definitions[ident].supplied["breakdowns"])
    sums = parts.groupby(key)[["NUMERATOR", "DENOMINATOR"]].sum()
    totals = tidy[tidy["BREAKDOWN"] == "all"].set_index(key)[["NUMERATOR", "DENOMINATOR"]]
    joined = sums.merge(totals, left_index=True, right_index=True, how="left", suffixes=("", "_all"))
    assert joined.notna().all().all(), "a key with breakdown rows has no 'all' row"
    assert (joined["NUMERATOR"] == joined["NUMERATOR_all"]).all()
    assert (joined["DENOMINATOR"] == joined["DENOMINATOR_all"]).all()
    assert len(joined) == (totals.index.get_level_values(0) == "TOC03").sum()


def test_qof_layout_and_financial_year_from_the_file_name(qof_files, supplied_set):
    months = supplied_set[2]
    # Financial years (April to March) whose March is among the months: 2024/25 and 2025/26 here.
    expected = sorted(f"{(int(m[:4]) - 1) % 100:02d}{int(m[:4]) % 100:02d}" for m in months if m.endswith("-03"))
    assert sorted(QOF_FILE.match(n).group(1) + QOF_FILE.match(n).group(2) for n in qof_files) == expected
    assert supplied_set[3]["financial_years"] == [f"20{y[:2]}/{y[2:]}" for y in expected]
    for name, frame in qof_files.items():
        first, second = (int(g) for g in QOF_FILE.match(name).groups())
        assert second == (first + 1) % 100
        assert set(frame["MEASURE"]) == QOF_MEASURES
        per_key = frame.groupby(["PRACTICE_CODE", "INDICATOR_CODE"])["MEASURE"].agg(lambda m: sorted(m))
        assert all(m == sorted(QOF_MEASURES) for m in per_key)
        wide = frame.pivot(index=["PRACTICE_CODE", "INDICATOR_CODE"], columns="MEASURE", values="VALUE")
        assert (wide >= 0).all().all()
        assert (wide["NUMERATOR"] <= wide["DENOMINATOR"]).all()
        assert (wide["DENOMINATOR"] + wide["PCAS"] <= wide["REGISTER"]).all()
        # The AF anticoagulation code is the one in use that year: AF008 from 2023/24.
        af = {c for c in frame["INDICATOR_CODE"] if c.startswith("AF")}
        assert af == ({"AF008"} if second >= 24 else {"AF007"})


def test_qof_year_is_the_last_one_ended_when_no_march_is_covered(tmp_path, supplied_set):
    organisations = supplied_set[1]
    result = generate_supplied(tmp_path, organisations, ["2025-04", "2025-05", "2025-06", "2025-07"], seed=1)
    assert result["financial_years"] == ["2024/25"]
    assert (tmp_path / "supplied" / "ACHIEVEMENT_2425.csv").exists()
    assert result["quarters"] == ["2025-06"]


def test_counts_are_whole_non_negative_and_proportions_bounded(tidy, definitions):
    for column in ("NUMERATOR", "DENOMINATOR"):
        assert pd.api.types.is_integer_dtype(tidy[column]) and (tidy[column] >= 0).all()
    proportion = tidy["INDICATOR_ID"].map(lambda i: definitions[i].value_kind == "proportion")
    assert proportion.any()
    assert (tidy.loc[proportion, "NUMERATOR"] <= tidy.loc[proportion, "DENOMINATOR"]).all()


def test_toc03_readmission_lower_after_completed_follow_up_nationally(tidy):
    toc = tidy[(tidy["INDICATOR_ID"] == "TOC03") & (tidy["BREAKDOWN"] != "all")]
    national = toc.groupby(["PERIOD_END", "BREAKDOWN"])[["NUMERATOR", "DENOMINATOR"]].sum()
    rate = (national["NUMERATOR"] / national["DENOMINATOR"]).unstack("BREAKDOWN")
    assert (rate["completed"] < rate["not_completed"]).all()
    pooled = toc.groupby("BREAKDOWN")[["NUMERATOR", "DENOMINATOR"]].sum()
    pooled_rate = pooled["NUMERATOR"] / pooled["DENOMINATOR"]
    assert 0.07 < pooled_rate["completed"] < 0.13 and 0.13 < pooled_rate["not_completed"] < 0.20
    assert pooled_rate["completed"] < 0.8 * pooled_rate["not_completed"]


def national(tidy: pd.DataFrame, ident: str, multiplier: float) -> float:
    rows = tidy[(tidy["INDICATOR_ID"] == ident) & (tidy["BREAKDOWN"] == "all")]
    return rows["NUMERATOR"].sum() / rows["DENOMINATOR"].sum() * multiplier


def test_national_levels_are_plausible(tidy, qof_files):
    assert national(tidy, "COM01", 100) >= 93  # EPS carries about 95% of items or more
    assert 90 <= national(tidy, "COM02", 100) <= 100
    assert 5 <= national(tidy, "COM04", 100) <= 30  # eRD a modest share of EPS items
    assert national(tidy, "COM03", 100) < national(tidy, "COM04", 100) + 2
    assert 3 <= national(tidy, "COM05", 1000) <= 20  # NMS per 1,000 patients a quarter
    for frame in qof_files.values():
        wide = frame.pivot(index=["PRACTICE_CODE", "INDICATOR_CODE"], columns="MEASURE", values="VALUE")
        by_code = wide.groupby(level="INDICATOR_CODE")[["NUMERATOR", "DENOMINATOR"]].sum()
        af = by_code.loc[[c for c in by_code.index if c.startswith("AF")]].sum()
        assert 0.84 <= af["NUMERATOR"] / af["DENOMINATOR"] <= 0.92


def test_organisations_differ_by_more_than_chance(tidy):
    """Overdispersion: practice eRD shares vary far more than binomial sampling alone would make them."""
    rows = tidy[(tidy["INDICATOR_ID"] == "COM04") & (tidy["DENOMINATOR"] > 0)]
    rows = rows[rows["PERIOD_END"] == rows["PERIOD_END"].max()]
    p = rows["NUMERATOR"].sum() / rows["DENOMINATOR"].sum()
    z = (rows["NUMERATOR"] - p * rows["DENOMINATOR"]) / np.sqrt(p * (1 - p) * rows["DENOMINATOR"])
    assert (z**2).mean() > 10  # a dispersion ratio near 1 would mean no real variation


def test_populations_come_from_the_synthetic_list_sizes(supplied_set, tidy):
    folder, organisations = supplied_set[0], supplied_set[1]
    assert supplied_set[3]["population_source"] == "list_sizes"
    last = tidy["PERIOD_END"].max()
    lists = pd.read_csv(folder / "list_sizes" / f"gp-reg-pat-prac-quin-age_{last[:4]}{last[5:7]}.csv",
                        dtype={"ORG_CODE": str})
    lists = lists[(lists["SEX"] == "ALL") & (lists["AGE_GROUP_5"] == "ALL")].set_index("ORG_CODE")
    com05 = tidy[(tidy["INDICATOR_ID"] == "COM05") & (tidy["PERIOD_END"] == last)].set_index("ORG_CODE")
    assert (com05["DENOMINATOR"] == lists["NUMBER_OF_PATIENTS"].reindex(com05.index)).all()
    by_sub_icb = lists["NUMBER_OF_PATIENTS"].groupby(
        organisations.set_index("PRACTICE_CODE")["SUB_ICB_LOCATION_CODE"]).sum()
    saf10 = tidy[(tidy["INDICATOR_ID"] == "SAF10") & (tidy["PERIOD_END"] == last)].set_index("ORG_CODE")
    assert (saf10["DENOMINATOR"] == by_sub_icb.reindex(saf10.index)).all()


def _file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "supplied").glob("*.csv"))}


def test_same_seed_same_bytes_and_row_order_of_the_map_does_not_matter(tmp_path, supplied_set):
    organisations, months = supplied_set[1], supplied_set[2]
    first = generate_supplied(tmp_path / "a", organisations, months, seed=3)
    shuffled = organisations.sample(frac=1.0, random_state=0)
    generate_supplied(tmp_path / "b", shuffled, months, seed=3)
    generate_supplied(tmp_path / "c", organisations, months, seed=4)
    assert first["population_source"] == "drawn"  # no list-size files in these folders
    a, b, c = (_file_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, supplied_set, monkeypatch):
    organisations, months = supplied_set[1], supplied_set[2]
    generate_supplied(tmp_path, organisations, months, seed=5)
    before = _file_bytes(tmp_path)

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(moopt.atomic.os, "replace", failing_replace)  # the one atomic writer
    with pytest.raises(OSError, match="disk full"):
        generate_supplied(tmp_path, organisations, months, seed=6)
    assert _file_bytes(tmp_path) == before
    assert not list((tmp_path / "supplied").glob(".*"))


@pytest.mark.parametrize("change, message", [
    (lambda o, m: (o.drop(columns="SUB_ICB_LOCATION_CODE"), m), "SUB_ICB_LOCATION_CODE"),
    (lambda o, m: (o.iloc[:0], m), "no practices"),
    (lambda o, m: (pd.concat([o, o.iloc[:1]]), m), "more than once"),
    (lambda o, m: (o, []), "non-empty list"),
    (lambda o, m: (o, ["2025-1"]), "YYYY-MM"),
    (lambda o, m: (o, ["2025-01", "2025-03"]), "consecutive"),
    (lambda o, m: ("map.csv", m), "DataFrame"),
])
def test_bad_input_is_refused_with_a_plain_message(tmp_path, supplied_set, change, message):
    organisations, months = change(supplied_set[1], supplied_set[2])
    with pytest.raises(ValueError, match=message):
        generate_supplied(tmp_path, organisations, months)
    with pytest.raises(ValueError, match="seed"):
        generate_supplied(tmp_path, supplied_set[1], supplied_set[2], seed=-1)


def test_the_store_accepts_every_row(supplied_set, tmp_path, definitions):
    folder, _, _, result = supplied_set
    indicators = list(definitions.values())
    with Store(tmp_path / "store.duckdb") as store:
        store.ingest_organisations(folder / "organisations" / "gp-reg-pat-prac-map.csv")
        for relative in result["files"]:
            report = store.ingest_supplied(folder / relative, indicators, max_reject_share=0.0)
            assert report.rows_rejected == 0, (relative, report.reasons)
            assert report.rows_accepted == report.rows_read == result["rows"][relative]
        stored = store.con.execute(
            "SELECT indicator_id, count(*) FROM supplied GROUP BY 1 ORDER BY 1").fetchall()
    assert {i for i, _ in stored} == PRACTICE_LEVEL | SUB_ICB_LEVEL | {"CVD10", "DIA10"}
