"""The bulk download of a real small build, fetched by clicking its link in Chromium."""

from __future__ import annotations

import csv

import duckdb
import pytest

from moopt.site.downloads import CSV_FILE, PARQUET_FILE
from moopt.tables import TABLES

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]


def store_rows(built_site: dict) -> int:
    con = duckdb.connect(str(built_site["outputs"] / "store" / "moopt.duckdb"), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM indicator_results").fetchone()[0]
    finally:
        con.close()


def test_the_bulk_files_hold_the_whole_results_table(built_site):
    rows = store_rows(built_site)
    assert rows > 0
    with open(built_site["site"] / CSV_FILE, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        assert sum(1 for _ in reader) == rows
    assert header == TABLES["indicator_results"].column_names
    con = duckdb.connect()
    parquet = str(built_site["site"] / PARQUET_FILE).replace("'", "''")
    assert con.execute(f"SELECT count(*) FROM '{parquet}'").fetchone()[0] == rows


def test_click_the_bulk_csv_link_and_the_download_arrives(page, built_site, site_url, tmp_path):
    page.goto(site_url + "index.html")
    page.get_by_role("link", name="download all results, with the data dictionary").click()
    page.wait_for_url("**/downloads.html")
    with page.expect_download() as arrival:
        page.get_by_role("link", name="All results as CSV").click()
    download = arrival.value
    assert download.failure() is None
    assert download.suggested_filename == "moopt-results.csv"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.read_bytes() == (built_site["site"] / CSV_FILE).read_bytes()
