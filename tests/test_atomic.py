"""Tests for moopt.atomic's CSV writer: downloads cannot carry spreadsheet formulas (issue 10)."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd

from moopt.atomic import write_csv_atomic

HOSTILE = [
    '=HYPERLINK("http://example.invalid","Click")',
    "+44 20 7946 0000",
    "-2+3",
    "@SUM(A1:A9)",
    "\tTAB PCN",
    "\rCR PCN",
]


def _cells(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_text_that_a_spreadsheet_would_run_is_prefixed_with_a_quote(tmp_path):
    table = pd.DataFrame({"pcn_name": HOSTILE, "items": np.arange(len(HOSTILE))})
    path = write_csv_atomic(table, tmp_path / "download.csv")
    written = [row[0] for row in _cells(path)[1:]]
    # a carriage return inside a cell is written as a line feed, which the writer quotes
    assert written == ["'" + name.replace("\r", "\n") for name in HOSTILE]


def test_numbers_and_ordinary_text_are_untouched(tmp_path):
    table = pd.DataFrame({
        "org_name": ["A-B PRACTICE", "THE =PRACTICE", "E+F", "practice@nhs.net"],
        "value": [-1.5, 2.0, -0.25, 1e-7],
        "change": [-3, 4, -5, 6],
        "formatted": ["-1,234.5", "+3", "-12%", "-1e-3"],  # numbers that are already text
    })  # fmt: skip
    path = write_csv_atomic(table, tmp_path / "download.csv")
    back = pd.read_csv(path, dtype={"formatted": str})
    pd.testing.assert_frame_equal(back, table)
    assert back["value"].dtype == float and back["change"].dtype == np.int64


def test_categorical_and_string_columns_and_headers_are_neutralised(tmp_path):
    table = pd.DataFrame({
        "point_type": pd.Categorical(["=1+1", "common_cause"]),
        "org_name": pd.Series(["@cmd", None], dtype="string"),
        "=cmd": [1, 2],
    })  # fmt: skip
    path = write_csv_atomic(table, tmp_path / "download.csv")
    assert _cells(path) == [["point_type", "org_name", "'=cmd"], ["'=1+1", "'@cmd", "1"],
                            ["common_cause", "", "2"]]
    assert list(table["point_type"]) == ["=1+1", "common_cause"]  # the caller's frame is unchanged


def test_data_files_can_be_written_exactly(tmp_path):
    table = pd.DataFrame({"PRACTICE_NAME": [n for n in HOSTILE if "\r" not in n]})
    path = write_csv_atomic(table, tmp_path / "cache.csv", spreadsheet_safe=False)
    assert [row[0] for row in _cells(path)[1:]] == list(table["PRACTICE_NAME"])
