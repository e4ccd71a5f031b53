"""The results downloads of a real small build, one fetched by clicking its link in Chromium."""

from __future__ import annotations

import csv

import duckdb
import pytest

from moopt.site.downloads import HISTORY_PARQUET_FILE, LATEST_CSV_FILE, LATEST_PARQUET_FILE
from moopt.tables import TABLES

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]


def store_rows(built_site: dict, where: str) -> int:
    con = duckdb.connect(str(built_site["outputs"] / "store" / "moopt.duckdb"), read_only=True)
    try:
        return con.execute(f"SELECT count(*) FROM indicator_results WHERE {where}").fetchone()[0]
    finally:
        con.close()


def parquet_rows(path, where: str = "TRUE") -> int:
    return duckdb.connect().execute(
        f"SELECT count(*) FROM '{str(path).replace(chr(39), chr(39) * 2)}' WHERE {where}").fetchone()[0]


def test_the_files_hold_every_level_but_practice_latest_and_history(built_site):
    assert built_site["level"] != "practice"
    history = store_rows(built_site, "org_level <> 'practice'")
    assert history > 0 and store_rows(built_site, "org_level = 'practice'") > 0
    site = built_site["site"]
    assert parquet_rows(site / HISTORY_PARQUET_FILE) == history
    assert parquet_rows(site / HISTORY_PARQUET_FILE, "org_level = 'practice'") == 0
    with open(site / LATEST_CSV_FILE, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        latest = sum(1 for _ in reader)
    assert header == TABLES["indicator_results"].column_names
    assert 0 < latest == parquet_rows(site / LATEST_PARQUET_FILE) < history
    # One period per indicator in the latest file: the one its pages show.
    periods = duckdb.connect().execute(
        f"SELECT count(DISTINCT (indicator_id, period_type, period)) = count(DISTINCT indicator_id) "
        f"FROM '{site / LATEST_PARQUET_FILE}'").fetchone()[0]
    assert periods


def test_click_the_bulk_csv_link_and_the_download_arrives(page, built_site, site_url, tmp_path):
    page.goto(site_url + "index.html")
    page.get_by_role("link", name="download all results, with the data dictionary").click()
    page.wait_for_url("**/downloads.html")
    with page.expect_download() as arrival:
        page.get_by_role("link", name="Latest results as CSV").click()
    download = arrival.value
    assert download.failure() is None
    assert download.suggested_filename == "moopt-results-latest.csv"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.read_bytes() == (built_site["site"] / LATEST_CSV_FILE).read_bytes()
