"""The results downloads (latest CSV and Parquet, history Parquet) and their data dictionary page."""

from __future__ import annotations

import csv
import re
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from test_site import make_outputs

from moopt.site import build_site
from moopt.site.downloads import (
    HISTORY_PARQUET_FILE,
    LATEST_CSV_FILE,
    LATEST_PARQUET_FILE,
    STORE_FILE,
    write_bulk_downloads,
)
from moopt.tables import TABLES

COLUMNS = TABLES["indicator_results"].columns


def write_store(out: Path, rows: list[dict], results_key: str = "key-1", org_level: str = "sub_icb",
                period_end: str = "2026-09-01", has_rolling: bool = True) -> Path:
    """A store holding an ``indicator_results`` table with the contract's columns, and run_facts."""
    path = out / STORE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    frame = pd.DataFrame([{c.name: row.get(c.name) for c in COLUMNS} for row in rows])
    con = duckdb.connect(str(path))
    try:
        con.register("incoming", frame)
        casts = ", ".join(f'CAST("{c.name}" AS {c.type}) AS "{c.name}"' for c in COLUMNS)
        con.execute(f"CREATE TABLE indicator_results AS SELECT {casts} FROM incoming")
        con.execute("CREATE TABLE run_facts AS SELECT ? AS results_key, ? AS org_level, "
                    "CAST(? AS DATE) AS period_end, ? AS has_rolling",
                    [results_key, org_level, period_end, has_rolling])
    finally:
        con.close()
    return path


def result_row(code: str, value: float, **extra) -> dict:
    row = {"indicator_id": "AMR01", "org_level": "sub_icb", "org_code": code, "org_name": f"Org {code}",
           "period": "2026-09-01", "period_type": "rolling_12m", "multiplier": 1000.0,
           "numerator": 12345678.9, "denominator": 3.0, "value": value, "kind": "rate"}
    row.update(extra)
    return row


class _DictionaryColumns(HTMLParser):
    """First cells of the data dictionary table (the one after the 'Data dictionary' heading)."""

    def __init__(self):
        super().__init__()
        self.columns, self._section, self._cell, self._first, self._text = [], False, False, False, ""

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self._text = ""
        if tag == "tr":
            self._first = True
        if tag == "td" and self._first and self._section:
            self._cell, self._text = True, ""

    def handle_endtag(self, tag):
        if tag == "h2":
            self._section = self._text.strip() == "Data dictionary"
        if tag == "td" and self._cell:
            self.columns.append(self._text.strip())
            self._cell = self._first = False
        if tag == "table" and self._section:
            self._section = False

    def handle_data(self, data):
        self._text += data


def dictionary_columns(page: Path) -> list[str]:
    parser = _DictionaryColumns()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.columns


def test_files_hold_every_row_and_exactly_the_dictionary_columns(tmp_path):
    out, _ = make_outputs(tmp_path)
    write_store(out, [result_row("A1", 0.000123456789), result_row("B2", 2.5),
                      result_row("C3", None, not_compared_reason="No value: the denominator is 0.")])
    result = build_site(out, renderer="builtin")
    site = result["site_dir"]
    assert result["bulk_downloads"].latest_rows == result["bulk_downloads"].history_rows == 3
    with open(site / LATEST_CSV_FILE, newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    header, body = table[0], table[1:]
    assert len(body) == 3
    assert header == [c.name for c in COLUMNS] == dictionary_columns(site / "downloads.html")
    parquet = pd.read_parquet(site / LATEST_PARQUET_FILE)
    assert len(parquet) == 3 and list(parquet.columns) == header
    by_code = {row[header.index("org_code")]: row for row in body}
    assert by_code["A1"][header.index("value")] == "0.000123457"  # 6 significant figures
    assert by_code["A1"][header.index("numerator")] == "12345679.0"  # whole digits all kept
    assert by_code["C3"][header.index("value")] == ""
    assert parquet.loc[parquet.org_code == "A1", "value"].item() == pytest.approx(0.000123457, rel=1e-12)


def test_home_and_about_link_the_downloads_page(tmp_path):
    out, _ = make_outputs(tmp_path)
    write_store(out, [result_row("A1", 1.0)])
    site = build_site(out, renderer="builtin")["site_dir"]
    for page in ("index.html", "about.html"):
        assert 'href="downloads.html"' in (site / page).read_text(encoding="utf-8"), page
    text = (site / "downloads.html").read_text(encoding="utf-8")
    assert f'href="{LATEST_CSV_FILE}" download' in text and f'href="{LATEST_PARQUET_FILE}" download' in text
    assert "6 significant figures" in text


def test_without_a_store_there_is_no_downloads_page(tmp_path):
    out, _ = make_outputs(tmp_path)
    result = build_site(out, renderer="builtin")
    assert result["bulk_downloads"] is None
    assert not (result["site_dir"] / "downloads.html").exists()
    assert "downloads.html" not in (result["site_dir"] / "index.html").read_text(encoding="utf-8")


def test_csv_text_cannot_run_as_a_formula_but_parquet_keeps_it(tmp_path):
    store = write_store(tmp_path, [result_row("A1", 1.0, org_name="=HYPERLINK(\"x\")"),
                                   result_row("B2", 1.0, org_name="-12.5"),
                                   result_row("C3", 1.0, org_name="Line\r\nbreak")])
    write_bulk_downloads(store, tmp_path / "site")
    names = pd.read_csv(tmp_path / "site" / LATEST_CSV_FILE, keep_default_na=False)["org_name"].tolist()
    assert names == ["'=HYPERLINK(\"x\")", "-12.5", "Line\nbreak"]
    assert pd.read_parquet(tmp_path / "site" / LATEST_PARQUET_FILE)["org_name"].iloc[0] == "=HYPERLINK(\"x\")"


def test_unchanged_results_are_reused_and_changed_ones_rewritten(tmp_path):
    store = write_store(tmp_path, [result_row("A1", 1.0)], results_key="first")
    first = write_bulk_downloads(store, tmp_path / "site")
    again = write_bulk_downloads(store, tmp_path / "site2", previous_site=tmp_path / "site")
    assert not first.reused and again.reused
    assert (tmp_path / "site2" / LATEST_CSV_FILE).read_bytes() == (tmp_path / "site" / LATEST_CSV_FILE).read_bytes()
    store = write_store(tmp_path, [result_row("A1", 2.0), result_row("B2", 3.0)], results_key="second")
    changed = write_bulk_downloads(store, tmp_path / "site3", previous_site=tmp_path / "site2")
    assert not changed.reused and changed.latest_rows == 2
    assert len(pd.read_parquet(tmp_path / "site3" / LATEST_PARQUET_FILE)) == 2


def test_a_store_that_breaks_the_contract_is_refused(tmp_path):
    path = tmp_path / STORE_FILE
    path.parent.mkdir(parents=True)
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE indicator_results AS SELECT 'AMR01' AS indicator_id")
    with pytest.raises(RuntimeError, match=re.escape("does not match its contract")):
        write_bulk_downloads(path, tmp_path / "site")


def test_latest_file_holds_each_indicators_latest_main_period_and_history_every_period(tmp_path):
    rows = [result_row(code, 1.0, period=period, period_type=period_type)
            for code in ("A1", "B2")
            for period, period_type in (("2026-08-01", "rolling_12m"), ("2026-09-01", "rolling_12m"),
                                        ("2026-09-01", "month"), ("2026-10-01", "rolling_12m"))]
    # A supplied indicator (quarterly in its definition) compares on its quarters, not rolling rows.
    rows += [result_row("A1", 5.0, indicator_id="TOC01", period="2026-06-01", period_type="quarter"),
             result_row("A1", 6.0, indicator_id="TOC01", period="2026-03-01", period_type="quarter"),
             result_row("A1", 7.0, indicator_id="TOC01", period="2026-09-01", period_type="rolling_12m")]
    store = write_store(tmp_path, rows, period_end="2026-09-01")
    written = write_bulk_downloads(store, tmp_path / "site")
    latest = pd.read_parquet(tmp_path / "site" / LATEST_PARQUET_FILE)
    keys = sorted(zip(latest.indicator_id, latest.org_code, latest.period_type, latest.period.astype(str)))
    # 2026-10 is after the run's last month, as the pages (which stop at period_end) read it.
    assert keys == [("AMR01", "A1", "rolling_12m", "2026-09-01"), ("AMR01", "B2", "rolling_12m", "2026-09-01"),
                    ("TOC01", "A1", "quarter", "2026-06-01")]
    history = pd.read_parquet(tmp_path / "site" / HISTORY_PARQUET_FILE)
    assert len(history) == len(rows) == written.history_rows and written.latest_rows == 3
    csv_rows = pd.read_csv(tmp_path / "site" / LATEST_CSV_FILE)
    assert len(csv_rows) == 3 and list(csv_rows.columns) == list(history.columns)


def test_without_a_year_of_data_the_latest_file_holds_months(tmp_path):
    rows = [result_row("A1", 1.0, period="2026-09-01", period_type="month"),
            result_row("A1", 2.0, period="2026-08-01", period_type="month")]
    store = write_store(tmp_path, rows, has_rolling=False)
    write_bulk_downloads(store, tmp_path / "site")
    latest = pd.read_parquet(tmp_path / "site" / LATEST_PARQUET_FILE)
    assert latest[["period_type", "value"]].values.tolist() == [["month", 1.0]]


@pytest.mark.parametrize("run_level, practice_rows", [("sub_icb", 0), ("practice", 1)])
def test_practices_are_in_the_downloads_only_in_a_practice_level_run(tmp_path, run_level, practice_rows):
    rows = [result_row("A1", 1.0), result_row("P1", 2.0, org_level="practice"),
            result_row("ENG", 3.0, org_level="england"), result_row("R1", 4.0, org_level="region")]
    store = write_store(tmp_path, rows, org_level=run_level)
    written = write_bulk_downloads(store, tmp_path / "site")
    for name in (LATEST_PARQUET_FILE, HISTORY_PARQUET_FILE):
        levels = pd.read_parquet(tmp_path / "site" / name)["org_level"].tolist()
        assert levels.count("practice") == practice_rows, name
        assert {"sub_icb", "england", "region"} <= set(levels), name
    assert written.latest_rows == 3 + practice_rows


def test_the_downloads_page_says_what_each_file_holds_and_where_the_full_table_is(tmp_path):
    out, _ = make_outputs(tmp_path)
    write_store(out, [result_row("A1", 1.0), result_row("A1", 1.0, period="2026-08-01"),
                      result_row("P1", 2.0, org_level="practice")])
    site = build_site(out, renderer="builtin")["site_dir"]
    text = " ".join(re.sub(r"<[^>]+>", " ", (site / "downloads.html").read_text(encoding="utf-8")).split())
    assert "moopt-results-latest.csv and moopt-results-latest.parquet hold the same 1 rows" in text
    assert "moopt-results-history.parquet holds 2 rows" in text
    assert "Practice rows are not in the downloads." in text
    assert "3 rows in this run" in text and "outputs/store/moopt.duckdb" in text and "docs/tables.md" in text
    for name in (LATEST_CSV_FILE, LATEST_PARQUET_FILE, HISTORY_PARQUET_FILE):
        assert (site / name).is_file(), name
