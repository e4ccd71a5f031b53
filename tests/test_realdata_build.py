"""The real September and October 2017 sample end to end, checked against sums of the raw rows."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from moopt.cli import main
from moopt.site import check_links

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.realdata]


@pytest.fixture(scope="module")
def real_build(tmp_path_factory):
    shared = ROOT.parent / "shared"
    if not (shared / "realdata" / "openprescribing" / "e2e-data-1").is_dir():
        pytest.skip(f"real NHS sample data not found at {shared / 'realdata'} (it lives beside the repository)")
    top = tmp_path_factory.mktemp("real")
    project = top / "main"
    project.mkdir()
    for name in ("notebooks", "parameters"):
        shutil.copytree(ROOT / name, project / name)
    (top / "shared").symlink_to(shared)  # the run file names ../shared/realdata, as in the repository
    cwd = os.getcwd()
    os.chdir(project)
    try:
        status = main(["build", "--params", "parameters/real-sample-2017.yml",
                       "--themes", "antimicrobials,safety"])
    finally:
        os.chdir(cwd)
    assert status == 0
    return shared / "realdata" / "openprescribing", project / "outputs" / "real-sample-2017"


def raw_items(sample: Path, month_folder: str, month: str, prefixes: tuple[str, ...],
              exclude: tuple[str, ...] = ()) -> pd.Series:
    """Items per practice straight from the published CSV, with plain pandas."""
    rows = pd.read_csv(sample / month_folder / f"epd_{month}.csv", dtype={"BNF_CODE": str})
    code = rows["BNF_CODE"].str.strip()
    keep = code.str.startswith(prefixes) & ~code.str.startswith(exclude) if exclude else code.str.startswith(prefixes)
    return rows[keep].groupby("PRACTICE_CODE")["ITEMS"].sum()


def raw_list_size(sample: Path, month_folder: str) -> pd.Series:
    rows = pd.read_csv(sample / month_folder / "gp-reg-pat-prac-quin-age.csv")
    total = rows[(rows["SEX"] == "ALL") & (rows["AGE_GROUP_5"] == "ALL")]
    return total.set_index("ORG_CODE")["NUMBER_OF_PATIENTS"]


def computed(out: Path, indicator: str, level: str, code: str, month: str) -> pd.Series:
    con = duckdb.connect(str(out / "store" / "moopt.duckdb"), read_only=True)
    row = con.execute("SELECT numerator, denominator, value FROM indicator_values WHERE indicator_id = ? "
                      "AND org_level = ? AND org_code = ? AND period = ? AND period_type = 'month'",
                      [indicator, level, code, pd.Timestamp(month)]).fetchdf()
    con.close()
    assert len(row) == 1
    return row.iloc[0]


@pytest.mark.parametrize("folder, month", [("e2e-data-1", "201709"), ("e2e-data-2", "201710")])
def test_amr02_and_amr03_equal_sums_of_the_raw_rows(real_build, folder, month):
    sample, out = real_build
    when = f"{month[:4]}-{month[4:]}-01"
    broad = raw_items(sample, folder, month, ("0501013K0", "0501021", "050112"))
    selected = raw_items(sample, folder, month, ("050101", "0501021", "050103", "050105", "050108", "050111",
                                                 "050112", "050113"))
    antibacterials = raw_items(sample, folder, month, ("0501",), ("050109", "050110", "0501130H0"))
    lists = raw_list_size(sample, folder)
    for practice in ("L84073", "B85010"):
        amr02 = computed(out, "AMR02", "practice", practice, when)
        assert amr02.numerator == broad.get(practice, 0)
        assert amr02.denominator == selected[practice]
        assert amr02.value == pytest.approx(100 * broad.get(practice, 0) / selected[practice])
    ccg = ["L84073", "L84018"]  # NHS Gloucestershire CCG (11M)
    amr03 = computed(out, "AMR03", "sub_icb", "11M", when)
    assert amr03.numerator == antibacterials[ccg].sum()
    assert amr03.denominator == lists[ccg].sum()
    assert amr03.value == pytest.approx(1000 * antibacterials[ccg].sum() / lists[ccg].sum())


def test_real_sample_pages_and_links(real_build):
    _, out = real_build
    index = (out / "site" / "orgs" / "index.html").read_text()
    for ccg in ("11M", "03A"):
        assert f"sub_icb/{ccg}/index.html" in index
        page = (out / "site" / "orgs" / "sub_icb" / ccg / "antimicrobials.html").read_text()
        assert "fewer than 12 months" in page and "moopt-vega-spec" in page
        assert "SYNTHETIC DATA" not in page.upper()
        # Four practices are not England: every page says what "England" means here.
        assert "Part of England only. The data hold prescribing for 4 practices in 2 sub-ICB" in page
    assert check_links(out / "site") == []
