"""The store as Parquet: prescribing partitioned by month, a month replaced atomically."""

from __future__ import annotations

import duckdb
import pytest

import factories as f
from moopt.cli import main
from moopt.parquet_store import (PART_FILE, export_parquet, month_folder, read_manifest,
                                 prescribing_parquet_sql, read_prescribing_duckdb, remove_month, replace_month)
from moopt.store import Store, ingest_files

MONTHS = f.months_between("2025-01", 3)


@pytest.fixture
def store_path(tmp_path):
    f.write_map(tmp_path / "map.csv")
    rows, lists = [], []
    for i, month in enumerate(MONTHS):
        for p in f.PRACTICES:
            for k in range(i + 1):  # 4, 8 and 12 rows per month: months differ in size
                rows.append(f.epd_row(month, p, "0501013B0AAABAB", 10 + k, quantity=28.0 + k))
            lists += f.list_size_rows(month, p, {("MALE", "25_29"): 100 + i})
    f.write_epd(tmp_path / "epd.csv", rows)
    f.write_list_sizes(tmp_path / "ls.csv", lists)
    path = tmp_path / "store" / "moopt.duckdb"
    with Store(path) as store:
        ingest_files(store, tmp_path / "map.csv", [tmp_path / "epd.csv"], [tmp_path / "ls.csv"])
    return path


def _counts(con, folder) -> dict[str, int]:
    rows = read_prescribing_duckdb(con, folder).aggregate("month, count(*)", "month").fetchall()
    return {str(m)[:7]: n for m, n in rows}


def test_export_replace_and_read_back(store_path, tmp_path):
    folder = tmp_path / "parquet"
    con = duckdb.connect(str(store_path))
    export = export_parquet(con, folder)
    in_store = {str(m)[:7]: n for m, n in con.execute(
        "SELECT month, count(*) FROM prescribing GROUP BY month").fetchall()}
    assert in_store == {MONTHS[0]: 4, MONTHS[1]: 8, MONTHS[2]: 12}
    assert export.months == in_store and _counts(con, folder) == in_store
    assert sorted(p.name for p in (folder / "prescribing").iterdir()) == [f"month={m}" for m in MONTHS]
    for table in ("list_size", "organisations"):
        back = con.execute(f"SELECT count(*) FROM read_parquet('{folder / table / PART_FILE}')").fetchall()[0][0]
        assert back == export.tables[table] == con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    # The same rows come back, month as a date again (not only the same counts).
    con.execute(f"CREATE TEMP VIEW read_back AS {prescribing_parquet_sql(folder)}")
    missing = con.execute("SELECT count(*) FROM (SELECT month, practice_code, bnf_code, items, quantity FROM "
                          "prescribing EXCEPT ALL SELECT month, practice_code, bnf_code, items, quantity "
                          "FROM read_back)").fetchall()[0][0]
    assert missing == 0

    # The middle month changes in the store (a corrected file); only its partition is rewritten.
    first_file = month_folder(folder, MONTHS[0]) / PART_FILE
    before = first_file.stat().st_mtime_ns
    con.execute(f"DELETE FROM prescribing WHERE month = DATE '{MONTHS[1]}-01' AND practice_code = 'A00001'")
    assert replace_month(con, folder, MONTHS[1]) == 6
    assert _counts(con, folder) == {MONTHS[0]: 4, MONTHS[1]: 6, MONTHS[2]: 12}
    assert read_manifest(folder).months[MONTHS[1]] == 6 and read_manifest(folder).tables["prescribing"] == 22
    assert first_file.stat().st_mtime_ns == before
    # No temporary file is left beside the partition (a reader's glob could otherwise see it).
    assert [p.name for p in month_folder(folder, MONTHS[1]).iterdir()] == [PART_FILE]

    remove_month(folder, MONTHS[2])
    assert _counts(con, folder) == {MONTHS[0]: 4, MONTHS[1]: 6}
    con.close()


def test_a_failed_replacement_leaves_the_old_month(store_path, tmp_path, monkeypatch):
    folder = tmp_path / "parquet"
    con = duckdb.connect(str(store_path))
    export_parquet(con, folder)
    with pytest.raises(ValueError, match="no prescribing for 2031-01"):
        replace_month(con, folder, "2031-01")
    with pytest.raises(ValueError, match="not a month"):
        replace_month(con, folder, "January")
    # A write that fails half way (the disk fills, say) leaves the month's previous file.
    import moopt.parquet_store as ps

    real = ps._month_select
    monkeypatch.setattr(ps, "_month_select", lambda month: real(month) + " AND no_such_column")
    with pytest.raises(duckdb.Error):
        replace_month(con, folder, MONTHS[0])
    assert _counts(con, folder)[MONTHS[0]] == 4
    assert [p.name for p in month_folder(folder, MONTHS[0]).iterdir()] == [PART_FILE]
    con.close()


def test_export_command(store_path, tmp_path, capsys):
    out = tmp_path / "cli-parquet"
    outputs = store_path.parent.parent
    assert main(["export-parquet", "--outputs", str(outputs), "--out", str(out)]) == 0
    assert read_manifest(out).tables["prescribing"] == 24
    assert main(["export-parquet", "--outputs", str(outputs), "--out", str(out), "--month", MONTHS[0]]) == 0
    assert f"prescribing {MONTHS[0]}: 4 rows" in capsys.readouterr().out
