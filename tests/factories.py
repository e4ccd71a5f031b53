"""Small hand-made data sets in the published file layouts, for tests.

Every number in these files is chosen by the test that uses it, so expected
indicator values can be worked out by hand.
"""

from __future__ import annotations

import csv
from pathlib import Path

# ../shared/realdata beside the repository (real published NHS samples; tests skip where absent).
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"

EPD_COLUMNS = [
    "YEAR_MONTH", "REGIONAL_OFFICE_NAME", "REGIONAL_OFFICE_CODE", "ICB_NAME", "ICB_CODE", "PCO_NAME",
    "PCO_CODE", "PRACTICE_NAME", "PRACTICE_CODE", "ADDRESS_1", "ADDRESS_2", "ADDRESS_3", "ADDRESS_4",
    "POSTCODE", "BNF_CHEMICAL_SUBSTANCE", "CHEMICAL_SUBSTANCE_BNF_DESCR", "BNF_CODE", "BNF_DESCRIPTION",
    "BNF_CHAPTER_PLUS_CODE", "QUANTITY", "ITEMS", "TOTAL_QUANTITY", "ADQUSAGE", "NIC", "ACTUAL_COST",
    "UNIDENTIFIED",
]
MAP_COLUMNS = [
    "PUBLICATION", "EXTRACT_DATE", "PRACTICE_CODE", "PRACTICE_NAME", "PRACTICE_POSTCODE", "PCN_CODE",
    "PCN_NAME", "ONS_SUB_ICB_LOCATION_CODE", "SUB_ICB_LOCATION_CODE", "SUB_ICB_LOCATION_NAME",
    "ONS_ICB_CODE", "ICB_CODE", "ICB_NAME", "ONS_COMM_REGION_CODE", "COMM_REGION_CODE",
    "COMM_REGION_NAME", "SUPPLIER_NAME",
]
QUIN_COLUMNS = ["PUBLICATION", "EXTRACT_DATE", "ORG_TYPE", "ORG_CODE", "ONS_CODE", "POSTCODE", "SEX",
                "AGE_GROUP_5", "NUMBER_OF_PATIENTS"]
QUIN_BANDS = ["0_4", "5_9", "10_14", "15_19", "20_24", "25_29", "30_34", "35_39", "40_44", "45_49",
              "50_54", "55_59", "60_64", "65_69", "70_74", "75_79", "80_84", "85_89", "90_94", "95+"]
MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]

# practice -> (pcn, sub_icb, icb, region)
PRACTICES = {
    "A00001": ("P01", "S1A", "QA1", "Y01"),
    "A00002": ("P01", "S1A", "QA1", "Y01"),
    "A00003": ("P02", "S2B", "QA1", "Y01"),
    "A00004": ("P03", "S3C", "QB2", "Y02"),
}


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_map(path: Path, practices: dict = PRACTICES) -> Path:
    rows = []
    for code, (pcn, sub, icb, region) in practices.items():
        rows.append(["GP_PRAC_PAT_LIST", "01Oct2025", code, f"Practice {code}", "ZZ1 1ZZ", pcn,
                     f"PCN {pcn}", "E38000001", sub, f"Sub-ICB {sub}", "E54000001", icb, f"ICB {icb}",
                     "E40000001", region, f"Region {region}", "TPP"])
    return write_csv(path, MAP_COLUMNS, rows)


def epd_row(month: str, practice: str, bnf_code: str, items: int, quantity: float = 28.0,
            adq: float | None = None, cost: float = 10.0) -> list:
    """One EPD row; month like '2025-01'."""
    total = quantity * items
    return [month.replace("-", ""), "REGION", "Y01", "ICB", "QA1", "SUB", "S1A00", f"Practice {practice}",
            practice, "", "", "", "", "", bnf_code[:9], "", bnf_code, "", "", quantity, items, total,
            total if adq is None else adq, cost, round(cost * 0.93, 5), "N"]


def write_epd(path: Path, rows: list[list]) -> Path:
    return write_csv(path, EPD_COLUMNS, rows)


def list_size_rows(month: str, practice: str, bands: dict[tuple[str, str], int]) -> list[list]:
    """Quinary rows for one practice: ``bands`` maps (sex, band) -> patients; other bands are 0."""
    year, mon = month.split("-")
    extract = f"01{MONTH_NAMES[int(mon) - 1]}{year}"
    rows = []
    total = 0
    for sex in ("MALE", "FEMALE"):
        for band in QUIN_BANDS:
            n = bands.get((sex, band), 0)
            total += n
            rows.append(["GP_PRAC_PAT_LIST", extract, "GP", practice, "", "ZZ1 1ZZ", sex, band, n])
    rows.append(["GP_PRAC_PAT_LIST", extract, "GP", practice, "", "ZZ1 1ZZ", "ALL", "ALL", total])
    return rows


def write_list_sizes(path: Path, rows: list[list]) -> Path:
    return write_csv(path, QUIN_COLUMNS, rows)


def months_between(first: str, count: int) -> list[str]:
    year, mon = map(int, first.split("-"))
    out = []
    for _ in range(count):
        out.append(f"{year:04d}-{mon:02d}")
        mon += 1
        if mon == 13:
            year, mon = year + 1, 1
    return out


def copy_project(folder: Path) -> Path:
    """Make ``folder`` a moopt project: the repository's notebooks, parameters and Quarto settings."""
    import shutil

    root = Path(__file__).resolve().parents[1]
    for name in ("notebooks", "parameters"):
        shutil.copytree(root / name, folder / name)
    shutil.copy(root / "_quarto.yml", folder / "_quarto.yml")
    return folder


def first_sub_icb_codes(project: Path, count: int = 1) -> list[str]:
    """The first ``count`` sub-ICB location codes of the project's synthetic set, sorted."""
    import pandas as pd

    mapping = pd.read_csv(project / "outputs/data/synthetic/organisations/gp-reg-pat-prac-map.csv", dtype=str)
    return sorted(mapping["SUB_ICB_LOCATION_CODE"].unique())[:count]


def small_build(folder: Path, *build_args: str, orgs: int | None = None) -> Path:
    """Make ``folder`` a project, generate the small synthetic set and run ``moopt build`` in it.

    ``orgs``: build only the first so many sub-ICB locations (``--orgs``). Returns the project.
    """
    import os

    from moopt.cli import main

    project = copy_project(folder)
    cwd = os.getcwd()
    os.chdir(project)
    try:
        assert main(["synth", "--scale", "small"]) == 0
        codes = ["--orgs", ",".join(first_sub_icb_codes(project, orgs))] if orgs else []
        assert main(["build", *codes, *build_args]) == 0
    finally:
        os.chdir(cwd)
    return project


def write_notebook(path: Path, body: str) -> str:
    """A two-cell notebook: a ``parameters`` cell setting ``value = 1``, then ``body``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("value = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return str(path)


def run_engine(folder: Path, indicators=None):
    """Ingest ``folder``'s map.csv, epd.csv and ls.csv into a new store there and run the engine.

    Returns the ``indicator_values`` table, the ingest reports and the engine's report.
    """
    import ibis

    from moopt.indicators import load_indicators
    from moopt.indicators.engine import IndicatorEngine
    from moopt.store import Store, ingest_files

    with Store(folder / "store.duckdb") as store:
        reports = ingest_files(store, folder / "map.csv", [folder / "epd.csv"], [folder / "ls.csv"])
    backend = ibis.duckdb.connect(str(folder / "store.duckdb"))
    try:
        report = IndicatorEngine(backend, indicators if indicators is not None else load_indicators()).run()
        table = backend.table("indicator_values").to_pandas()
    finally:
        backend.disconnect()
    return table, reports, report
