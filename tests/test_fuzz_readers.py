"""Fuzzing the readers: every file is either read with every row accounted for, or refused
with a message that names it, leaving the store as it was.

The readers are ``Store.ingest_organisations`` (practice map), ``ingest_ods_organisations``
(ODS epraccur), ``ingest_prescribing`` (EPD, legacy PDPI), ``ingest_list_size`` (quinary,
single age or totals, NHSBSA quarterly), ``ingest_supplied`` (tidy, QOF achievement) and
``ingest_reference`` (legacy ADDR, CHEM), each fed plain, gzip and zip files. For every input:

1. a report where rows read = accepted + rejected = the data rows of the file (counted here,
   independently of DuckDB), and the target table holds what the report says was accepted;
2. or an ``IngestError``/``ValueError`` that names the file, with every store table unchanged;
3. never any other exception;
4. every rejected row is in ``rejects`` (file, a line of the file, a reason) and in the
   rejects CSV beside the store.

Inputs come from three sources: rows generated per layout with mutated values (a), byte-level
mutations of small valid files (b), and malformed copies of the real NHS samples in
../shared/realdata (c). The bugs the fuzzers found are fixed; each keeps a regression test at
the end of this file (``test_regression_*``) with the input that found it.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import io
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import factories as f
from moopt.indicators.definitions import load_indicators
from moopt.store import IngestError, IngestReport, Store

REALDATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata"
SAMPLES = REALDATA / "openprescribing"

TABLES = ("organisations", "practice_attributes", "prescribing", "list_size", "cost_centres",
          "practice_addresses", "bnf_chemicals", "supplied", "rejects", "ingest_log")
SUPPLIED = [i for i in load_indicators() if i.is_supplied]


def fuzz_settings(examples: int) -> settings:
    # Each example builds a DuckDB store and ingests a file (tens of milliseconds): keep counts modest.
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])




# -- layouts -------------------------------------------------------------------------------------

PDPI_HEADER = (" SHA,PCT,PRACTICE,BNF CODE,BNF NAME                                    ,ITEMS  ,NIC        ,"
               "ACT COST   ,QUANTITY,PERIOD,")
PDPI_HEADER_2019 = "SHA,PCT,PRACTICE,BNF CODE,BNF NAME,ITEMS,NIC,ACT COST,QUANTITY,PERIOD"
NHSBSA_BANDS = ("0-4", "5-14", "15-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+")
NHSBSA_COLUMNS = ["Regional Office Name", "Regional Office Code", "Area Team Name", "Area Team Code", "PCO Name",
                  "PCO Code", "Practice Name", "Practice Code",
                  *(f"{sex} {band}" for band in NHSBSA_BANDS for sex in ("Male", "Female"))]
NHSBSA_NAME = "Patient_List_Size_2016_01-03.csv"
ALL_COLUMNS = ["PUBLICATION", "EXTRACT_DATE", "TYPE", "CCG_CODE", "ONS_CCG_CODE", "CODE", "POSTCODE", "SEX", "AGE",
               "NUMBER_OF_PATIENTS"]
SINGLE_AGE_COLUMNS = ["PUBLICATION", "EXTRACT_DATE", "TYPE", "SUB_ICB_LOCATION_CODE", "ONS_SUB_ICB_LOCATION_CODE",
                      "ORG_CODE", "POSTCODE", "SEX", "AGE", "NUMBER_OF_PATIENTS"]
TIDY_COLUMNS = ["INDICATOR_ID", "ORG_LEVEL", "ORG_CODE", "PERIOD_START", "PERIOD_END", "BREAKDOWN", "NUMERATOR",
                "DENOMINATOR"]
QOF_COLUMNS = ["PRACTICE_CODE", "INDICATOR_CODE", "MEASURE", "VALUE"]
QOF_NAME = "ACHIEVEMENT_2425.csv"
CHEM_HEADER = "CHEM SUB ,NAME,                                                       201304,"

PRACTICE_CODES = list(f.PRACTICES)
SOME_PRACTICES = st.sampled_from(PRACTICE_CODES + ["Z99999"])  # Z99999 is in no map
BNF_CODES = st.sampled_from(["0501013B0AAABAB", "0212000B0AAAAAA", "0103050P0AAAAAA", "21220000023"])


def epraccur_row(code: str, setting: str = "4", commissioner: str = "S1A", region: str = "Y01",
                 area: str = "QA1") -> list[str]:
    """The 27 ODS fields of a prescribing cost centre (column 26 is the prescribing setting)."""
    return [code, f"Name {code}", region, area, "", "", "", "", "", "ZZ1 1ZZ", "20130401", "", "A", "B",
            commissioner, "20130401", "", "", "", "", "", "0", "", commissioner, "", setting, ""]


def ods_lookup(rows: list[tuple[str, str]]) -> bytes:
    """An eccg or eauth file: code and name in the 27-column ODS layout."""
    full = [[code, name, *[""] * 25] for code, name in rows]
    return csv_text(None, full, quoting=csv.QUOTE_ALL).encode()


def map_row(code: str, pcn: str, sub: str, icb: str, region: str) -> list[str]:
    return ["GP_PRAC_PAT_LIST", "01Oct2025", code, f"Practice {code}", "ZZ1 1ZZ", pcn, f"PCN {pcn}", "E38000001",
            sub, f"Sub-ICB {sub}", "E54000001", icb, f"ICB {icb}", "E40000001", region, f"Region {region}", "TPP"]


def pdpi_line(practice: str, bnf: str, name: str, items: int, nic: float, quantity: int, period: str,
              padded: bool) -> str:
    """A legacy PDPI line: padded with zeros and a trailing comma before December 2018, plain after."""
    if padded:
        fields = ["Q30", "5D7", practice, bnf, name.ljust(40), str(items).rjust(7, "0"), f"{nic:011.2f}",
                  f"{nic * 0.93:011.2f}", str(quantity).rjust(7, "0"), period]
        return ",".join(fields) + ","
    return ",".join(["Q30", "00K", practice, bnf, name, str(items), f"{nic:.2f}", f"{nic * 0.93:.2f}",
                     str(quantity), period])


# -- writing and counting files ------------------------------------------------------------------

def csv_text(header: list[str] | None, rows: list[list[str]], newline: str = "\n",
             quoting: int = csv.QUOTE_MINIMAL) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline, quoting=quoting)
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def csv_records(text: str, header: bool) -> int:
    """Non-empty CSV records after the header, by Python's csv module (a quoted field may span lines)."""
    n = sum(1 for record in csv.reader(io.StringIO(text, newline="")) if record)
    return max(n - 1, 0) if header else n


def data_lines(body: bytes, header: bool) -> int:
    """Non-empty lines after the header (all non-empty lines of a headerless file)."""
    lines = body.splitlines()
    return sum(1 for line in (lines[1:] if header else lines) if line)


def quotes_balanced(body: bytes) -> bool:
    """True when no line has an odd number of double quotes (so no quoted field can span lines)."""
    return all(line.count(b'"') % 2 == 0 for line in body.splitlines())


ECCG = ods_lookup([("S1A", "NHS ONE SUB-ICB"), ("S2B", "NHS TWO SUB-ICB"), ("S3C", "NHS THREE SUB-ICB")])
EAUTH = ods_lookup([("Y01", "REGION ONE"), ("Y02", "REGION TWO"), ("QA1", "ICB ONE"), ("QB2", "ICB TWO")])

CONTAINERS = st.sampled_from(["plain", "gz", "zip"])


def write_input(folder: Path, name: str, body: bytes, container: str) -> Path:
    """``body`` as file ``name`` in ``folder``: plain, gzip-compressed, or the one member of a zip."""
    if container == "plain":
        path = folder / name
        path.write_bytes(body)
    elif container == "gz":
        path = folder / f"{name}.gz"
        path.write_bytes(gzip.compress(body))
    else:
        path = folder / f"{Path(name).stem}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(name, body)
    return path


# -- stores --------------------------------------------------------------------------------------

def _preload(store: Store, folder: Path) -> None:
    """Rows in every table, so that a failed ingest that touched any of them would show."""
    f.write_map(folder / "map.csv")
    store.ingest_organisations(folder / "map.csv")
    store.ingest_prescribing(f.write_epd(folder / "epd_2024_06.csv", [
        f.epd_row("2024-06", "A00001", "0501013B0AAABAB", 3),
        f.epd_row("2024-06", "A00002", "BAD", 1)]), max_reject_share=1.0)
    store.ingest_list_size(f.write_list_sizes(folder / "ls_2024_06.csv",
                                              f.list_size_rows("2024-06", "A00001", {("MALE", "0_4"): 7})))
    f.write_csv(folder / "tidy_2024.csv", TIDY_COLUMNS,
                [["TOC01", "sub_icb", "S1A", "2024-04-01", "2024-06-30", "all", 3, 10]])
    store.ingest_supplied(folder / "tidy_2024.csv", SUPPLIED)
    (folder / "addr_2010.csv").write_bytes(b"201001,A00001,SURGERY ,STREET ,TOWN ,CITY ,COUNTY ,ZZ1 1ZZ ,\r\n")
    store.ingest_reference(folder / "addr_2010.csv")
    (folder / "chem_2010.csv").write_bytes(f"{CHEM_HEADER}\r\n9999999Z9,Preloaded name ,\r\n".encode())
    store.ingest_reference(folder / "chem_2010.csv")


def _real_map(folder: Path, codes: list[str]) -> Path:
    return f.write_map(folder / "map.csv", {code: ("P01", "S1A", "QA1", "Y01") for code in codes})


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Callable[[str], Path]:
    """Store files built once and copied for each example (copying is ~5x faster than building)."""
    built: dict[str, Path] = {}

    def template(kind: str) -> Path:
        if kind not in built:
            folder = tmp_path_factory.mktemp(f"template_{kind}")
            path = folder / "store" / "moopt.duckdb"
            with Store(path) as store:
                if kind == "loaded":
                    _preload(store, folder)
                elif kind == "real_e2e":  # the four practices of the 2017 sample, from ODS files
                    e2e = SAMPLES / "e2e-data-1"
                    store.ingest_ods_organisations(e2e / "epraccur.csv", e2e / "eccg.csv", e2e / "eauth.csv")
                elif kind in ("real_pdpi", "real_nhsbsa"):  # a map of the sample's own practices
                    relative, column = {"real_pdpi": ("format_samples/hscic_prescribing_sample.csv", 2),
                                        "real_nhsbsa": ("Patient_List_Size_2016_01-03.csv", 7)}[kind]
                    rows = list(csv.reader(io.StringIO(real_head(relative).decode())))[1:]
                    codes = sorted({row[column].strip() for row in rows if len(row) > column})
                    store.ingest_organisations(_real_map(folder, codes))
                else:
                    raise ValueError(f"no store template {kind!r}")
            built[kind] = path
        return built[kind]

    return template


@contextlib.contextmanager
def example_store(template: Path):
    """A private copy of a template store in its own folder (its rejects CSVs land there too)."""
    with tempfile.TemporaryDirectory(prefix="moopt_fuzz_") as tmp:
        folder = Path(tmp)
        (folder / "store").mkdir()
        shutil.copyfile(template, folder / "store" / "moopt.duckdb")
        store = Store(folder / "store" / "moopt.duckdb")
        try:
            yield store, folder
        finally:
            store.close()


def snapshot(store: Store) -> dict[str, list[str]]:
    """Every row of every store table, as sorted text (NaN-safe)."""
    return {t: sorted(repr(row) for row in store.con.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}


def count(store: Store, sql: str, params: list | None = None) -> int:
    return store.con.execute(sql, params or []).fetchall()[0][0]


# -- the contract --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expect:
    """What the file holds, counted here: its data rows and the line numbers a reject may carry."""

    rows: int
    last_line: int  # physical lines in the file
    first_line: int = 2  # 1 for headerless files
    exact: bool = True  # False where a stray quote may join lines into one record


def expect_lines(body: bytes, header: bool = True) -> Expect:
    """Expectations for a file read line by line (or whose quoting cannot join lines)."""
    return Expect(data_lines(body, header), max(len(body.splitlines()), 1), 2 if header else 1,
                  exact=quotes_balanced(body))


def expect_records(text: str, header: bool = True) -> Expect:
    """Expectations for a CSV written by the csv module: its records are the rows."""
    body = text.encode()
    return Expect(csv_records(text, header), max(len(body.splitlines()), 1), 2 if header else 1)


def outcome(text: str) -> None:
    """Count an outcome per property (shown by pytest --hypothesis-show-statistics)."""
    with contextlib.suppress(InvalidArgument):  # outside a Hypothesis test there is nothing to count
        event(text)


def check_ingest(store: Store, path: Path, call: Callable[[], IngestReport], expect: Expect,
                 stored: Callable[[Store, IngestReport, Path], None] | None = None) -> IngestReport | None:
    """Run one ingest and check the contract in the module docstring; return the report or None."""
    before = snapshot(store)
    try:
        report = call()
    except (IngestError, ValueError) as exc:
        outcome(f"refused: {type(exc).__name__}")
        assert str(path) in str(exc), f"the message does not name {path}: {exc}"
        assert snapshot(store) == before, f"the store changed although ingest failed: {exc}"
        return None
    assert not report.skipped
    outcome("read, with rejects" if report.rows_rejected else "read, no rejects")
    assert report.rows_read == report.rows_accepted + report.rows_rejected, report
    if expect.exact:
        assert report.rows_read == expect.rows, f"{expect.rows} data rows in the file: {report}"
    else:
        assert report.rows_read <= expect.rows, f"at most {expect.rows} data rows in the file: {report}"
    assert sum(report.reasons.values()) == report.rows_rejected
    rejects = store.con.execute("SELECT line, reason FROM rejects WHERE file = ?", [str(path)]).fetchall()
    assert len(rejects) == report.rows_rejected
    for line, reason in rejects:
        assert expect.first_line <= line <= expect.last_line, (line, reason, expect)
        assert reason and reason.strip()
    written = list(store.rejects_dir.glob("*.rejects.csv"))
    if report.rows_rejected:
        assert len(written) == 1, written
        frame = pd.read_csv(written[0], dtype=str, keep_default_na=False)
        assert frame["line"].str.fullmatch(r"\d+").all(), "line numbers must be whole numbers"
        lines = frame["line"].astype(int)
        assert sorted(zip(lines, frame["reason"])) == sorted(rejects)
        assert set(frame["file"]) == {str(path)}
    else:
        assert written == []
    logged = store.con.execute("SELECT rows_read, rows_accepted, rows_rejected FROM ingest_log WHERE file = ?",
                               [str(path)]).fetchall()
    assert logged == [(report.rows_read, report.rows_accepted, report.rows_rejected)]
    if stored:
        stored(store, report, path)
    return report


def set_aside(report: IngestReport, pattern: str) -> int:
    """The number of rows a report's note says were counted but not stored (0 without a note)."""
    found = re.match(pattern, report.note)
    return int(found.group(1).replace(",", "")) if found else 0


def from_file(store: Store, table: str, path: Path) -> int:
    return count(store, f"SELECT count(*) FROM {table} WHERE source_file = ?", [path.name])


def stored_organisations(store, report, path):
    assert count(store, "SELECT count(*) FROM organisations") == report.rows_accepted


def stored_ods(store, report, path):
    not_gp = set_aside(report, r"([\d,]+) rows for ([\d,]+) cost centres")
    centres = int(re.match(r"[\d,]+ rows for ([\d,]+) cost centres", report.note).group(1).replace(",", ""))
    assert count(store, "SELECT count(*) FROM organisations") == report.rows_accepted - not_gp
    assert count(store, "SELECT count(*) FROM cost_centres") == centres <= not_gp


def stored_cost_centres(store, report, path):
    practices = set_aside(report, r"([\d,]+) GP practices counted")
    assert count(store, "SELECT count(*) FROM cost_centres") <= report.rows_accepted - practices


def stored_prescribing(store, report, path):
    not_practices = set_aside(report, r"([\d,]+) rows for cost centres")
    assert from_file(store, "prescribing", path) == report.rows_accepted - not_practices
    months = [m.strftime("%Y-%m") for (m,) in store.con.execute(
        "SELECT DISTINCT month FROM prescribing WHERE source_file = ? ORDER BY 1", [path.name]).fetchall()]
    assert months == report.months


def stored_list_size(store, report, path):
    # Summary rows (totals where bands exist, other organisation types) are accepted, not stored.
    assert from_file(store, "list_size", path) <= report.rows_accepted


def stored_nhsbsa(store, report, path):
    # One row per practice becomes 18 bands x the quarter's 3 months.
    assert from_file(store, "list_size", path) == 54 * report.rows_accepted


def stored_tidy(store, report, path):
    assert from_file(store, "supplied", path) == report.rows_accepted


def stored_qof(store, report, path):
    # One stored row per practice and indicator; other measures and QOF codes are counted only.
    assert from_file(store, "supplied", path) <= report.rows_accepted


def stored_addresses(store, report, path):
    assert from_file(store, "practice_addresses", path) == report.rows_accepted


def stored_chemicals(store, report, path):
    assert from_file(store, "bnf_chemicals", path) == report.rows_accepted


# -- strategies: values, rows and files -----------------------------------------------------------

ODD_VALUES = ["", " ", "abc", "-1", "-0.5", "0", "2.5", "1e308", "-1e308", str(10 ** 30), "1e30", "NaN", "inf",
              "1,000", "0x1A", "\u0661\u0662", "é", "Ünïcödé", "😀", "\u202eRTL\u202c", "a,b", 'q"uote',
              '"', "two\nlines", "two\r\nlines", "\t", "x\x00y", "00000001", "9" * 40, "2025-13", "31/02/2025"]
FREE_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\r"), max_size=10)


def mutated(value: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(ODD_VALUES), FREE_TEXT,
                     st.sampled_from([value.lower(), f"  {value}  ", value * 2, value[:-1], f"{value}x"]))


@st.composite
def fuzz_rows(draw, rows: list[list], allow_structure: bool = True) -> list[list[str]]:
    """``rows`` as text with up to four mutations: odd values, lower case, padding, a field
    dropped or added, a row duplicated or deleted."""
    out = [[str(v) for v in row] for row in rows]
    kinds = ["value", "value", "value", "lower", "pad", "duplicate", "delete"]
    kinds += ["drop_field", "extra_field"] if allow_structure else []
    for _ in range(draw(st.integers(0, 4))):
        if not out:
            break
        i = draw(st.integers(0, len(out) - 1))
        row, kind = out[i], draw(st.sampled_from(kinds))
        if kind == "value":
            j = draw(st.integers(0, len(row) - 1))
            row[j] = draw(mutated(row[j]))
        elif kind == "lower":
            out[i] = [v.lower() for v in row]
        elif kind == "pad":
            out[i] = [f" {v} " for v in row]
        elif kind == "duplicate":
            out.insert(i, list(row))
        elif kind == "delete":
            del out[i]
        elif kind == "drop_field" and len(row) > 1:
            del row[draw(st.integers(0, len(row) - 1))]
        elif kind == "extra_field":
            row.insert(draw(st.integers(0, len(row))), draw(mutated("x")))
    return out


NEWLINES = st.sampled_from(["\n", "\r\n"])
SHARES = st.sampled_from([1.0, None])  # None: the default 1% allowance, which usually raises


def share_kwargs(share: float | None) -> dict:
    return {} if share is None else {"max_reject_share": share}


@st.composite
def epd_file(draw) -> str:
    rows = [f.epd_row(draw(st.sampled_from(["2025-01", "2025-02"])), draw(SOME_PRACTICES), draw(BNF_CODES),
                      draw(st.integers(0, 40)), draw(st.sampled_from([1.0, 28.0, 2.5])),
                      draw(st.none() | st.floats(0, 500)), draw(st.floats(0, 1000)))
            for _ in range(draw(st.integers(1, 6)))]
    header = list(f.EPD_COLUMNS)
    if draw(st.booleans()):  # the EPD with SNOMED code names
        header[header.index("BNF_CODE")], header[header.index("ADQUSAGE")] = "BNF_PRESENTATION_CODE", "ADQ_USAGE"
    return csv_text(header, draw(fuzz_rows(rows)), draw(NEWLINES))


@st.composite
def map_file(draw) -> str:
    codes = draw(st.lists(SOME_PRACTICES | st.from_regex(r"[A-Z][0-9]{5}", fullmatch=True), min_size=1, max_size=6))
    rows = [map_row(code, *draw(st.sampled_from(list(f.PRACTICES.values())))) for code in codes]
    header = list(f.MAP_COLUMNS)
    if draw(st.booleans()):  # the CCG-era names
        for old, new in (("SUB_ICB_LOCATION_CODE", "CCG_CODE"), ("SUB_ICB_LOCATION_NAME", "CCG_NAME"),
                         ("ICB_CODE", "STP_CODE"), ("ICB_NAME", "STP_NAME")):
            header[header.index(old)] = new
    return csv_text(header, draw(fuzz_rows(rows)), draw(NEWLINES))


@st.composite
def epraccur_file(draw) -> str:
    rows = [epraccur_row(draw(SOME_PRACTICES | st.from_regex(r"Y[0-9]{5}", fullmatch=True)),
                         draw(st.sampled_from(["4", "4", "1", "2", "10", ""])),
                         draw(st.sampled_from(["S1A", "S2B", "S3C"])))
            for _ in range(draw(st.integers(1, 6)))]
    return csv_text(None, draw(fuzz_rows(rows)), draw(NEWLINES), quoting=csv.QUOTE_ALL)


@st.composite
def pdpi_file(draw) -> bytes:
    padded = draw(st.booleans())
    period = "201710" if padded else "201812"
    lines = [pdpi_line(draw(SOME_PRACTICES), draw(BNF_CODES),
                       draw(st.sampled_from(["Amoxicillin_Cap 500mg", "Co-Amoxiclav_Tab 500mg/125mg, new"])),
                       draw(st.integers(0, 99)), draw(st.floats(0, 900)), draw(st.integers(0, 9999)), period, padded)
             for _ in range(draw(st.integers(1, 6)))]
    # The fields are mutated one by one and joined back: the reader splits lines on commas itself.
    rows = draw(fuzz_rows([line.split(",") for line in lines]))
    newline = "\r\n" if padded else "\n"
    text = newline.join([PDPI_HEADER if padded else PDPI_HEADER_2019, *(",".join(r) for r in rows)]) + newline
    return text.encode()


@st.composite
def quinary_file(draw) -> str:
    rows = []
    for practice in draw(st.lists(SOME_PRACTICES, min_size=1, max_size=2)):
        bands = {(sex, band): draw(st.integers(0, 300)) for sex, band in
                 draw(st.lists(st.tuples(st.sampled_from(["MALE", "FEMALE"]), st.sampled_from(f.QUIN_BANDS)),
                               max_size=4))}
        rows += f.list_size_rows(draw(st.sampled_from(["2025-01", "2025-02"])), practice, bands)
    if draw(st.booleans()):  # a national file also holds rows for other organisation types
        rows.append(["GP_PRAC_PAT_LIST", "01JAN2025", "PCN", "P01", "", "", "ALL", "ALL", 123])
    return csv_text(f.QUIN_COLUMNS, draw(fuzz_rows(rows)), draw(NEWLINES))


@st.composite
def single_age_or_totals_file(draw) -> str:
    practices = draw(st.lists(SOME_PRACTICES, min_size=1, max_size=3))
    if draw(st.booleans()):  # gp-reg-pat-prac-all: one total per practice
        header = ALL_COLUMNS
        rows = [["GP_PRAC_PAT_LIST", "01JAN2021", "GP", "00L", "E38000130", p, "ZZ1 1ZZ", "ALL", "ALL",
                 draw(st.integers(0, 20000))] for p in practices]
    else:  # gp-reg-pat-prac-sing-age-male: single years, open 95+, and the total
        header, sex, rows = SINGLE_AGE_COLUMNS, draw(st.sampled_from(["MALE", "FEMALE"])), []
        for p in practices:
            counts = {age: draw(st.integers(0, 90)) for age in ["0", "1", "2", "50", "95+"]}
            rows += [["GP_PRAC_PAT_LIST", "2026-04-01", "GP", "16C", "E38000247", p, "TS18 1HU", sex, age, n]
                     for age, n in counts.items()]
            rows.append(["GP_PRAC_PAT_LIST", "2026-04-01", "GP", "16C", "E38000247", p, "TS18 1HU", sex, "ALL",
                         sum(counts.values())])
    return csv_text(header, draw(fuzz_rows(rows)), draw(NEWLINES))


@st.composite
def nhsbsa_file(draw) -> str:
    with_month = draw(st.booleans())
    rows = [[*(["01/01/16"] if with_month else []), "NORTH", "Y54", "AREA", "Q45", "CCG", "00K00", "Practice",
             draw(SOME_PRACTICES), *draw(st.lists(st.integers(0, 999), min_size=18, max_size=18))]
            for _ in range(draw(st.integers(1, 5)))]
    header = (["Month"] if with_month else []) + NHSBSA_COLUMNS
    return csv_text(header, draw(fuzz_rows(rows)), draw(NEWLINES))


@st.composite
def tidy_file(draw) -> str:
    quarter = ("2025-01-01", "2025-03-31")
    org = st.sampled_from([("sub_icb", "S1A"), ("sub_icb", "S2B"), ("icb", "QA1"), ("region", "Y02"),
                           ("pcn", "P03"), ("practice", "A00004"), ("sub_icb", "NOPE")])
    rows = []
    for _ in range(draw(st.integers(1, 5))):
        level, code = draw(org)
        indicator = draw(st.sampled_from(["TOC01", "TOC03", "COM05", "ADH01"]))
        denominator = draw(st.integers(0, 500))
        rows.append([indicator, level, code, *quarter, "all", draw(st.integers(0, denominator)), denominator])
        if indicator == "TOC03" and draw(st.booleans()):  # its breakdowns, adding up to the "all" row
            part = draw(st.integers(0, rows[-1][6]))
            rows += [[indicator, level, code, *quarter, "completed", part, denominator],
                     [indicator, level, code, *quarter, "not_completed", rows[-1][6] - part, 0]]
    return csv_text(TIDY_COLUMNS, draw(fuzz_rows(rows)), draw(NEWLINES))


@st.composite
def qof_file(draw) -> str:
    rows = []
    for practice in draw(st.lists(SOME_PRACTICES, min_size=1, max_size=3, unique=True)):
        for code in draw(st.lists(st.sampled_from(["AF007", "DM020", "HYP008"]), min_size=1, max_size=2, unique=True)):
            denominator = draw(st.integers(0, 400))
            rows += [[practice, code, "NUMERATOR", draw(st.integers(0, denominator))],
                     [practice, code, "DENOMINATOR", denominator], [practice, code, "ACHIEVED_POINTS", 12]]
    return csv_text(QOF_COLUMNS, draw(fuzz_rows(rows)), draw(NEWLINES))


@st.composite
def addr_file(draw) -> bytes:
    trailing = draw(st.booleans())  # the files before December 2018 end every line with a comma
    rows = [["201008", draw(SOME_PRACTICES), "THE SURGERY".ljust(20), "HEALTH CENTRE ", "LAWSON STREET ",
             "STOCKTON ", "CLEVELAND ", "TS18 1HU "] + ([""] if trailing else [])
            for _ in range(draw(st.integers(1, 5)))]
    # Written as the legacy files are (no quoting); a row with an extra or a missing field is
    # rejected as malformed
    rows = draw(fuzz_rows(rows))
    return "".join(",".join(r) + "\r\n" for r in rows).encode()


@st.composite
def chem_file(draw) -> bytes:
    rows = [[draw(st.sampled_from(["0101010A0", "0101010B0", "0212000B0", "2346", "BAD"])),
             draw(st.sampled_from(["Alexitol Sodium", "Almasilate", "Atorvastatin"])).ljust(30), ""]
            for _ in range(draw(st.integers(1, 6)))]
    rows = draw(fuzz_rows(rows))
    return (CHEM_HEADER + "\r\n" + "".join(",".join(r) + "\r\n" for r in rows)).encode()


# -- (a) generated rows ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Reader:
    """One reader under test: how to call it on a path and what it must have stored."""

    name: str
    file_name: str
    call: Callable[[Store, Path, Path, dict], IngestReport]
    stored: Callable[[Store, IngestReport, Path], None]
    header: bool = True


def _ods(store, path, folder, kwargs, hierarchy=True):
    (folder / "eccg.csv").write_bytes(ECCG)  # the lookups stay valid (their damage is tested below)
    (folder / "eauth.csv").write_bytes(EAUTH)
    return store.ingest_ods_organisations(path, folder / "eccg.csv", folder / "eauth.csv",
                                          hierarchy=hierarchy, **kwargs)


READERS = {
    "map": Reader("map", "gp-reg-pat-prac-map.csv", lambda s, p, d, kw: s.ingest_organisations(p, **kw),
                  stored_organisations),
    "ods": Reader("ods", "epraccur.csv", _ods, stored_ods, header=False),
    "ods_cost_centres": Reader("ods_cost_centres", "epraccur.csv",
                               lambda s, p, d, kw: _ods(s, p, d, kw, hierarchy=False), stored_cost_centres,
                               header=False),
    "epd": Reader("epd", "EPD_202501.csv", lambda s, p, d, kw: s.ingest_prescribing(p, **kw), stored_prescribing),
    "pdpi": Reader("pdpi", "T201710PDPI BNFT.CSV", lambda s, p, d, kw: s.ingest_prescribing(p, **kw),
                   stored_prescribing),
    "quinary": Reader("quinary", "gp-reg-pat-prac-quin-age.csv", lambda s, p, d, kw: s.ingest_list_size(p, **kw),
                      stored_list_size),
    "single_age": Reader("single_age", "gp-reg-pat-prac-all.csv", lambda s, p, d, kw: s.ingest_list_size(p, **kw),
                         stored_list_size),
    "nhsbsa": Reader("nhsbsa", NHSBSA_NAME, lambda s, p, d, kw: s.ingest_list_size(p, **kw), stored_nhsbsa),
    "tidy": Reader("tidy", "supplied_toc.csv", lambda s, p, d, kw: s.ingest_supplied(p, SUPPLIED, **kw),
                   stored_tidy),
    "qof": Reader("qof", QOF_NAME, lambda s, p, d, kw: s.ingest_supplied(p, SUPPLIED, **kw), stored_qof),
    "addr": Reader("addr", "T201008ADDR BNFT.CSV", lambda s, p, d, kw: s.ingest_reference(p, **kw),
                   stored_addresses, header=False),
    "chem": Reader("chem", "T201008CHEM SUBS.CSV", lambda s, p, d, kw: s.ingest_reference(p, **kw),
                   stored_chemicals),
}


def run_reader(template: Path, reader: Reader, body: bytes, expect: Expect, container: str,
               share: float | None) -> IngestReport | None:
    with example_store(template) as (store, folder):
        path = write_input(folder, reader.file_name, body, container)
        return check_ingest(store, path, lambda: reader.call(store, path, folder, share_kwargs(share)), expect,
                            reader.stored)


# Record-based layouts: the csv module wrote them, so their records are the rows.
RECORD_FILES = {"map": map_file(), "ods": epraccur_file(), "ods_cost_centres": epraccur_file(),
                "epd": epd_file(), "quinary": quinary_file(), "single_age": single_age_or_totals_file(),
                "nhsbsa": nhsbsa_file(), "tidy": tidy_file(), "qof": qof_file()}


@pytest.mark.parametrize("name", list(RECORD_FILES))
@fuzz_settings(15)
@given(data=st.data(), container=CONTAINERS, share=SHARES)
def test_generated_rows_are_read_or_refused_never_lost(templates, name, data, container, share):
    reader, text = READERS[name], data.draw(RECORD_FILES[name], label="file")
    run_reader(templates("loaded"), reader, text.encode(), expect_records(text, reader.header), container, share)


# Line-based layouts: the legacy files are read line by line (no quoting), so lines are the rows.
LINE_FILES = {"pdpi": pdpi_file(), "addr": addr_file(), "chem": chem_file()}


@pytest.mark.parametrize("name", list(LINE_FILES))
@fuzz_settings(15)
@given(data=st.data(), container=CONTAINERS, share=SHARES)
def test_generated_legacy_lines_are_read_or_refused_never_lost(templates, name, data, container, share):
    reader, body = READERS[name], data.draw(LINE_FILES[name], label="file")
    expect = expect_lines(body, reader.header)
    if name == "pdpi":  # read as whole lines: quotes are plain characters
        expect = Expect(expect.rows, expect.last_line, expect.first_line, exact=True)
    run_reader(templates("loaded"), reader, body, expect, container, share)


# -- (b) byte-level mutations of small valid files --------------------------------------------------

INSERTS = st.sampled_from([b'"', b",", b"\n", b"\r", b"\r\n", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\x00", b"\x01",
                           "é".encode(), "😀".encode(), b";", b"|", b"\t", b"\\", b" "]) | st.binary(min_size=1,
                                                                                                   max_size=4)


@st.composite
def byte_mutations(draw, body: bytes) -> bytes:
    """Up to three of: truncate, delete/duplicate/swap a line, insert bytes, a BOM, change line ends,
    empty the file or keep only its header."""
    for _ in range(draw(st.integers(1, 3))):
        lines = body.splitlines(keepends=True)
        op = draw(st.sampled_from(["truncate", "delete_line", "duplicate_line", "swap_lines", "insert", "insert",
                                   "bom", "crlf", "lf", "one_crlf", "empty", "header_only"]))
        if op == "truncate":
            body = body[:draw(st.integers(0, len(body)))]
        elif op in ("delete_line", "duplicate_line", "one_crlf") and lines:
            i = draw(st.integers(0, len(lines) - 1))
            if op == "delete_line":
                del lines[i]
            elif op == "duplicate_line":
                lines.insert(i, lines[i])
            else:
                lines[i] = lines[i].rstrip(b"\r\n") + b"\r\n"
            body = b"".join(lines)
        elif op == "swap_lines" and len(lines) > 1:
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            body = b"".join(lines)
        elif op == "insert":
            at = draw(st.integers(0, len(body)))
            body = body[:at] + draw(INSERTS) + body[at:]
        elif op == "bom":
            body = b"\xef\xbb\xbf" + body
        elif op == "crlf":
            body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        elif op == "lf":
            body = body.replace(b"\r\n", b"\n")
        elif op == "empty":
            body = b""
        elif op == "header_only":
            body = b"".join(lines[:1])
    return body


def small_files() -> dict[str, bytes]:
    """One small valid file per reader, with a rejected row or two among them."""
    rows = [f.epd_row("2025-01", p, "0501013B0AAABAB", 3) for p in PRACTICE_CODES]
    rows[1][7] = "Smith, Jones & Partners"  # a quoted field
    return {
        "map": csv_text(f.MAP_COLUMNS, [map_row(c, *parents) for c, parents in f.PRACTICES.items()]).encode(),
        "ods": csv_text(None, [epraccur_row("A00001"), epraccur_row("A00002"), epraccur_row("Y00001", "2"),
                               epraccur_row("A00003", commissioner="S2B")], quoting=csv.QUOTE_ALL).encode(),
        "epd": csv_text(f.EPD_COLUMNS, rows).encode(),
        "pdpi": ("\r\n".join([PDPI_HEADER] + [
            pdpi_line(p, "0501013B0AAABAB", "Amoxicillin, caps", 3, 12.5, 84, "201710", True)
            for p in PRACTICE_CODES]) + "\r\n").encode(),
        "quinary": csv_text(f.QUIN_COLUMNS, f.list_size_rows("2025-01", "A00001", {("MALE", "0_4"): 10})
                            + f.list_size_rows("2025-01", "A00002", {("FEMALE", "95+"): 4})).encode(),
        "single_age": csv_text(ALL_COLUMNS, [["GP_PRAC_PAT_LIST", "01JAN2021", "GP", "00L", "E38000130", p,
                                              "ZZ1 1ZZ", "ALL", "ALL", 5903] for p in PRACTICE_CODES]).encode(),
        "nhsbsa": csv_text(NHSBSA_COLUMNS, [["N", "Y54", "A", "Q45", "C", "00K00", "P", p, *range(18)]
                                            for p in PRACTICE_CODES]).encode(),
        "tidy": csv_text(TIDY_COLUMNS, [["TOC01", "sub_icb", s, "2025-01-01", "2025-03-31", "all", 3, 10]
                                        for s in ("S1A", "S2B", "S3C")]).encode(),
        "qof": csv_text(QOF_COLUMNS, [["A00001", "AF007", "NUMERATOR", 9], ["A00001", "AF007", "DENOMINATOR", 10],
                                      ["A00002", "DM020", "NUMERATOR", 4], ["A00002", "DM020", "DENOMINATOR", 8],
                                      ["A00003", "HYP008", "NUMERATOR", 1]]).encode(),
        "addr": b"201008,A00001,THE DENSHAM SURGERY  ,THE HEALTH CENTRE ,LAWSON STREET ,STOCKTON ,CLEVELAND ,"
                b"TS18 1HU ,\r\n201008,A00002,SECOND ,X ,Y ,Z ,C ,TS1 1AA ,\r\n201008,A00003,THIRD ,X ,Y ,Z ,C ,"
                b"TS1 1AB ,\r\n",
        "chem": (CHEM_HEADER + "\r\n0101010A0,Alexitol Sodium      ,\r\n2346     ,Discharge Solidifying Agents ,"
                               "\r\n0212000B0,Atorvastatin ,\r\n").encode(),
    }


SMALL = small_files()


def expect_mutated(name: str, body: bytes) -> tuple[bytes, Expect]:
    """The body to ingest and what to expect of it, for a byte-mutated file of reader ``name``."""
    if name == "pdpi":
        return body, Expect(data_lines(body, True), max(len(body.splitlines()), 1))
    return body, expect_lines(body, READERS[name].header)


@pytest.mark.parametrize("name", list(SMALL))
@fuzz_settings(8)
@given(data=st.data(), container=CONTAINERS)
def test_byte_mutations_of_small_files_are_read_or_refused_never_lost(templates, name, data, container):
    body, expect = expect_mutated(name, data.draw(byte_mutations(SMALL[name]), label="file"))
    run_reader(templates("loaded"), READERS[name], body, expect, container, 1.0)


def test_empty_header_only_and_missing_files(templates):
    """The edges every reader meets: no bytes at all, a header and nothing else, a missing file."""
    for name, body in SMALL.items():
        reader = READERS[name]
        header_only = body.splitlines(keepends=True)[0] if reader.header else b""
        for content in (b"", header_only, b"\xef\xbb\xbf" + header_only):
            if reader.header or content:
                run_reader(templates("loaded"), reader, content, expect_lines(content, reader.header), "plain", None)
        with example_store(templates("loaded")) as (store, folder):
            missing = folder / reader.file_name
            check_ingest(store, missing, lambda: reader.call(store, missing, folder, {}), Expect(0, 0))


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    return buffer.getvalue()


BIG_EPD = csv_text(f.EPD_COLUMNS, [f.epd_row(f"20{10 + i // 4}-01", PRACTICE_CODES[i % 4], "0501013B0AAABAB", 3)
                                   for i in range(200)]).encode()
ZIPPED_BIG_EPD = _zip({"EPD_202501.csv": BIG_EPD})
DAMAGED_CONTAINERS = {
    "plain text named .gz": ("EPD_202501.csv.gz", SMALL["epd"]),
    "gzip missing its last bytes": ("EPD_202501.csv.gz", gzip.compress(BIG_EPD)[:-4]),
    "not a zip archive": ("EPD_202501.zip", b"PK\x03\x04 not really a zip"),
    "zip cut in half": ("EPD_202501.zip", ZIPPED_BIG_EPD[:len(ZIPPED_BIG_EPD) // 2]),
    "zip without a CSV member": ("EPD_202501.zip", _zip({"README.txt": b"notes"})),
    "zip with two EPD members": ("EPD_202501.zip", _zip({"a.csv": SMALL["epd"], "b.csv": SMALL["epd"]})),
    "zip with an empty member": ("EPD_202501.zip", _zip({"EPD_202501.csv": b""})),
}


@pytest.mark.parametrize("case", list(DAMAGED_CONTAINERS))
def test_damaged_gzip_and_zip_files_are_refused_by_name(templates, case):
    name, content = DAMAGED_CONTAINERS[case]
    with example_store(templates("loaded")) as (store, folder):
        path = folder / name
        path.write_bytes(content)
        before = snapshot(store)
        with pytest.raises(ValueError) as refused:
            store.ingest_prescribing(path, max_reject_share=1.0)
        assert str(path) in str(refused.value)
        assert snapshot(store) == before


# -- exact line numbers --------------------------------------------------------------------------

EXACT_LINE_CASES = {
    # reader -> (valid row for a practice, the same row made invalid, the reason expected)
    "epd": (lambda p: f.epd_row("2025-01", p, "0501013B0AAABAB", 3),
            lambda p: f.epd_row("2025-01", p, "0501", 3), "BNF code is malformed"),
    "map": (lambda p: map_row(p, "P01", "S1A", "QA1", "Y01"),
            lambda p: map_row(p, "P01", "S 1A", "QA1", "Y01"), "sub-ICB code is blank or malformed"),
    "nhsbsa": (lambda p: ["N", "Y54", "A", "Q45", "C", "00K00", "P", p, *range(18)],
               lambda p: ["N", "Y54", "A", "Q45", "C", "00K00", "P", p, *range(17), -3],
               "Female 75+ is not a whole number of 0 or more"),
}
HEADERS = {"epd": f.EPD_COLUMNS, "map": f.MAP_COLUMNS, "nhsbsa": NHSBSA_COLUMNS}


@pytest.mark.parametrize("name", list(EXACT_LINE_CASES))
@fuzz_settings(6)
@given(n=st.integers(1, 30), at=st.integers(0, 30), newline=NEWLINES, container=CONTAINERS)
def test_a_rejected_row_is_reported_at_its_own_line(templates, name, n, at, newline, container):
    good, bad, reason = EXACT_LINE_CASES[name]
    codes = [f"A{i:05d}" for i in range(n + 1)]
    rows = [good(code) for code in codes[:-1]]
    at = min(at, n)
    rows.insert(at, bad(codes[-1]))
    text = csv_text(HEADERS[name], rows, newline)
    with example_store(templates("loaded")) as (store, folder):
        if name != "map":  # the practices must be known for their rows to be accepted
            store.ingest_organisations(f.write_map(folder / "all.csv", {c: ("P01", "S1A", "QA1", "Y01")
                                                                       for c in codes}))
        reader = READERS[name]
        path = write_input(folder, reader.file_name, text.encode(), container)
        report = check_ingest(store, path, lambda: reader.call(store, path, folder, {"max_reject_share": 1.0}),
                              expect_records(text), reader.stored)
        assert report.rows_rejected == 1
        assert store.con.execute("SELECT line, reason FROM rejects WHERE file = ?", [str(path)]).fetchall() \
            == [(at + 2, reason)]


# -- (c) malformed copies of the real samples ------------------------------------------------------

@functools.cache
def real_head(relative: str, lines: int = 200) -> bytes:
    """The first ``lines`` lines of a real sample, bytes as published (line ends kept)."""
    if not (SAMPLES / relative).exists():
        pytest.skip(f"real sample {relative} not found under {SAMPLES}")
    with open(SAMPLES / relative, "rb") as handle:
        return b"".join(handle.readline() for _ in range(lines))


REAL_SAMPLES = {
    # name -> (sample path, reader, store template)
    "epd_201709": ("e2e-data-1/epd_201709.csv", "epd", "real_e2e"),
    "quin_age_201709": ("e2e-data-1/gp-reg-pat-prac-quin-age.csv", "quinary", "real_e2e"),
    "pdpi_201410": ("format_samples/hscic_prescribing_sample.csv", "pdpi", "real_pdpi"),
    "addr_201403": ("format_samples/hscic_practices.csv", "addr", "loaded"),
    "chem_201304": ("format_samples/hscic_chemicals.csv", "chem", "loaded"),
    "nhsbsa_2016q1": ("Patient_List_Size_2016_01-03.csv", "nhsbsa", "real_nhsbsa"),
}


@pytest.mark.realdata
@pytest.mark.parametrize("sample", list(REAL_SAMPLES))
def test_real_samples_unmutated_every_line_accounted_for(realdata, templates, sample):
    relative, name, template = REAL_SAMPLES[sample]
    body, expect = expect_mutated(name, real_head(relative))
    report = run_reader(templates(template), READERS[name], body, expect, "plain", 1.0)
    assert report is not None and report.rows_read == expect.rows > 0


@pytest.mark.realdata
@pytest.mark.parametrize("sample", list(REAL_SAMPLES))
@fuzz_settings(10)
@given(data=st.data(), container=CONTAINERS, share=SHARES)
def test_malformed_copies_of_real_samples_are_read_or_refused_never_lost(realdata, templates, sample, data,
                                                                         container, share):
    relative, name, template = REAL_SAMPLES[sample]
    body, expect = expect_mutated(name, data.draw(byte_mutations(real_head(relative)), label="file"))
    run_reader(templates(template), READERS[name], body, expect, container, share)


# -- regressions: the inputs that found bugs in the readers, now read or refused as they should be -----

def ingest_once(template: Path, reader: Reader, body: bytes, expect: Expect, container: str = "plain",
                name: str | None = None, **kwargs) -> IngestReport | None:
    """Check one file against the contract."""
    with example_store(template) as (store, folder):
        path = write_input(folder, name or reader.file_name, body, container)
        return check_ingest(store, path, lambda: reader.call(store, path, folder, kwargs), expect, reader.stored)


@pytest.mark.parametrize("value", ["1e30", "inf", "NaN"])
def test_regression_nhsbsa_out_of_range_band_count_is_rejected(templates, value):
    text = csv_text(NHSBSA_COLUMNS, [["N", "Y54", "A", "Q45", "C", "00K00", "P", "A00001", *[1] * 17, value]])
    ingest_once(templates("loaded"), READERS["nhsbsa"], text.encode(), expect_records(text), max_reject_share=1.0)


def test_regression_truncated_gzip_is_refused_by_name(templates):
    packed = gzip.compress(SMALL["epd"])
    with example_store(templates("loaded")) as (store, folder):
        path = folder / "EPD_202501.csv.gz"
        path.write_bytes(packed[:len(packed) // 2])
        check_ingest(store, path, lambda: store.ingest_prescribing(path), Expect(0, 0))


def test_regression_zip_member_with_bad_crc_is_refused_by_name(templates):
    rows = [f.epd_row(f"20{10 + i // 4}-01", PRACTICE_CODES[i % 4], "0501013B0AAABAB", 3) for i in range(200)]
    body = csv_text(f.EPD_COLUMNS, rows).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("EPD_202501.csv", body)
    damaged = bytearray(buffer.getvalue())
    at = damaged.find(b"0501013B0AAABAB", 20000)  # well past the first 8 KB the header read sees
    damaged[at] = ord("9")
    with example_store(templates("loaded")) as (store, folder):
        path = folder / "EPD_202501.zip"
        path.write_bytes(bytes(damaged))
        check_ingest(store, path, lambda: store.ingest_prescribing(path, max_reject_share=1.0), Expect(0, 0))


@pytest.mark.parametrize("lookup", [b'"S1A","N\xffAME"\n', b'"S1A","NAME"\n'], ids=["bad-utf8", "two-columns"])
def test_regression_malformed_eccg_is_refused_by_name(templates, lookup):
    with example_store(templates("loaded")) as (store, folder):
        epraccur = folder / "epraccur.csv"
        epraccur.write_text(csv_text(None, [epraccur_row("A00001")], quoting=csv.QUOTE_ALL))
        (folder / "eccg.csv").write_bytes(lookup)
        before = snapshot(store)
        with pytest.raises(ValueError, match=re.escape(str(folder / "eccg.csv"))):
            store.ingest_ods_organisations(epraccur, folder / "eccg.csv")
        assert snapshot(store) == before


@pytest.mark.parametrize("case", ["epd YEAR_MONTH 000001", "quinary EXTRACT_DATE 01JAN0000",
                                  "tidy PERIOD 99999-01-01", "tidy PERIOD -2025-01-01"])
def test_regression_implausible_dates_are_rejected(templates, case):
    if case.startswith("epd"):
        row = f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3)
        row[0] = "000001"
        name, text = "epd", csv_text(f.EPD_COLUMNS, [row])
    elif case.startswith("quinary"):
        rows = f.list_size_rows("2025-01", "A00001", {("MALE", "0_4"): 10})
        name, text = "quinary", csv_text(f.QUIN_COLUMNS, [[r[0], "01JAN0000", *r[2:]] for r in rows])
    else:
        start = case.split()[-1]
        end = start.replace("-01-01", "-03-31")
        name, text = "tidy", csv_text(TIDY_COLUMNS, [["TOC01", "icb", "QA1", start, end, "all", 1, 2]])
    ingest_once(templates("loaded"), READERS[name], text.encode(), expect_records(text), max_reject_share=1.0)


def test_regression_blank_lines_in_legacy_pdpi_are_not_rows(templates):
    body = SMALL["pdpi"].replace(b"\r\nQ30", b"\r\n\r\nQ30", 1) + b"\r\n"  # an empty line inside and at the end
    ingest_once(templates("loaded"), READERS["pdpi"], body,
                Expect(data_lines(body, True), len(body.splitlines())), max_reject_share=1.0)


@pytest.mark.parametrize("name", ["ods", "addr"])
def test_regression_headerless_reject_lines_are_exact(templates, name):
    if name == "ods":
        body = csv_text(None, [epraccur_row("A00001"), epraccur_row("A0/002")], quoting=csv.QUOTE_ALL).encode()
    else:
        body = b"201008,A00001,X ,Y ,Z ,W ,V ,TS1 1AA\r\n201008,A0/002,X ,Y ,Z ,W ,V ,TS1 1AA\r\n"
    with example_store(templates("loaded")) as (store, folder):
        path = write_input(folder, READERS[name].file_name, body, "plain")
        READERS[name].call(store, path, folder, {"max_reject_share": 1.0})
        assert store.con.execute("SELECT line FROM rejects WHERE file = ?", [str(path)]).fetchall() == [(2,)]


@pytest.mark.parametrize("case", ["two empty lines", "a quoted line break"])
def test_regression_reject_lines_after_blank_lines_and_line_breaks(templates, case):
    rows = [f.epd_row("2025-01", p, "0501013B0AAABAB", 3) for p in ("A00001", "A00002")]
    if case == "two empty lines":
        lines = csv_text(f.EPD_COLUMNS, rows + [f.epd_row("2025-01", "A00003", "0501", 3)]).splitlines()
        body = "\n".join([lines[0], lines[1], "", "", lines[2], lines[3]]) + "\n"  # the bad row is on line 6
    else:
        rows[0][7] = "Two\nlines"
        body = csv_text(f.EPD_COLUMNS, rows + [f.epd_row("2025-01", "A00003", "0501", 3)])  # bad row: line 5
    with example_store(templates("loaded")) as (store, folder):
        path = write_input(folder, "EPD_202501.csv", body.encode(), "plain")
        store.ingest_prescribing(path, max_reject_share=1.0)
        bad_line = len(body.splitlines())
        assert store.con.execute("SELECT line FROM rejects WHERE file = ?", [str(path)]).fetchall() == [(bad_line,)]


@pytest.mark.parametrize("name", ["epd", "quinary"])
def test_regression_one_out_of_range_count_rejects_its_row(templates, name):
    if name == "epd":
        rows = [f.epd_row("2025-01", p, "0501013B0AAABAB", 3) for p in PRACTICE_CODES]
        rows[0][20] = "1e30"
        text = csv_text(f.EPD_COLUMNS, rows)
    else:
        rows = f.list_size_rows("2025-01", "A00001", {("MALE", "0_4"): 10})
        rows[5][-1] = "1e30"
        text = csv_text(f.QUIN_COLUMNS, rows)
    report = ingest_once(templates("loaded"), READERS[name], text.encode(), expect_records(text),
                         max_reject_share=1.0)
    assert report is not None and report.rows_rejected >= 1 and report.rows_accepted >= 1


@pytest.mark.parametrize("case", ["epd NIC NaN", "qof VALUE NaN", "tidy NUMERATOR NaN", "epd YEAR_MONTH infinity",
                                  "quinary EXTRACT_DATE infinity"])
def test_regression_not_a_number_text_is_rejected(templates, case):
    if case.startswith("epd"):
        row = f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3)
        row[23 if "NIC" in case else 0] = case.split()[-1]
        name, text = "epd", csv_text(f.EPD_COLUMNS, [row])
    elif case.startswith("qof"):
        name, text = "qof", csv_text(QOF_COLUMNS, [["A00001", "AF007", "NUMERATOR", "NaN"],
                                                  ["A00001", "AF007", "DENOMINATOR", "NaN"]])
    elif case.startswith("tidy"):
        name, text = "tidy", csv_text(TIDY_COLUMNS, [["TOC01", "icb", "QA1", "2025-01-01", "2025-03-31", "all",
                                                      "NaN", 10]])
    else:
        rows = f.list_size_rows("2025-01", "A00001", {("MALE", "0_4"): 10})
        name, text = "quinary", csv_text(f.QUIN_COLUMNS, [[r[0], "infinity", *r[2:]] for r in rows])
    report = ingest_once(templates("loaded"), READERS[name], text.encode(), expect_records(text),
                         max_reject_share=1.0)
    assert report is not None and report.rows_accepted == 0, report


def test_regression_one_stray_quote_rejects_its_line_only(templates):
    rows = [f.epd_row("2025-01", p, "0501013B0AAABAB", 3) for p in PRACTICE_CODES]
    for row in rows:
        row[7] = "Smith, Jones & Partners"  # quoted in the file, as real AREA_TEAM names are
    lines = csv_text(f.EPD_COLUMNS, rows).splitlines()
    lines[2] = lines[2].replace("REGION", '"REGION', 1)
    body = ("\n".join(lines) + "\n").encode()
    report = ingest_once(templates("loaded"), READERS["epd"], body, expect_lines(body), max_reject_share=1.0)
    assert report is not None and report.rows_rejected <= 2, report


def test_regression_addr_row_with_an_extra_field_is_rejected(templates):
    body = (b"201008,A00001,X ,Y ,Z ,W ,V ,TS1 1AA\r\n201008,A00002,X ,Y ,Z ,W ,V ,TS1 1AB,\r\n"
            b"201008,A00003,X ,Y ,Z ,W ,V ,TS1 1AC\r\n")
    report = ingest_once(templates("loaded"), READERS["addr"], body, expect_lines(body, header=False),
                         max_reject_share=1.0)
    assert report is not None and report.rows_accepted >= 2


def test_regression_clean_reingest_removes_the_rejects_csv(templates):
    with example_store(templates("loaded")) as (store, folder):
        path = f.write_epd(folder / "EPD_202501.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3),
                                                       f.epd_row("2025-01", "A00002", "0501", 3)])
        store.ingest_prescribing(path, max_reject_share=1.0)
        f.write_epd(path, [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3)])
        assert store.ingest_prescribing(path, force=True).rows_rejected == 0
        assert count(store, "SELECT count(*) FROM rejects WHERE file = ?", [str(path)]) == 0
        assert list(store.rejects_dir.glob("*.rejects.csv")) == []


def test_regression_rejects_csv_line_numbers_are_whole(templates):
    with example_store(templates("loaded")) as (store, folder):
        path = f.write_epd(folder / "EPD_202501.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3),
                                                       f.epd_row("2025-01", "A00002", "0501", 3)])
        store.ingest_prescribing(path, max_reject_share=1.0)
        (written,) = store.rejects_dir.glob("*.rejects.csv")
        assert pd.read_csv(written, dtype=str)["line"].tolist() == ["3"]


def test_regression_ods_zip_with_non_utf8_first_byte_names_the_zip(tmp_path):
    """Found by the byte-mutation fuzz test: the error named the CSV extracted beside the store."""
    import zipfile

    from moopt.store import Store

    row = '"A00001","Name A00001","Y01","QA1"' + ',""' * 6 + ',"20130401","","A","B","S1A"' + ',""' * 10 + ',"4",""\n'
    archive = tmp_path / "epraccur.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("epraccur.csv", b"\x80" + row.encode())
    with Store(tmp_path / "store" / "moopt.duckdb") as store:
        with pytest.raises(ValueError) as caught:
            store.ingest_ods_organisations(archive)
    assert str(archive) in str(caught.value) and "UTF-8" in str(caught.value)
