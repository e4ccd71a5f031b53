"""Benchmark: ingest throughput and peak memory on a full-size synthetic EPD month.

What it measures
    The throughput (rows per second and MB of CSV per second) and the peak resident memory
    of loading one English Prescribing Dataset month of about 18 million rows (a real month
    is 18.4 to 18.6 million rows and about 7.7 GB), for these contenders, each in its own
    child process so that its peak memory is its own:

    * ``moopt``: ``Store.ingest_prescribing`` into a fresh DuckDB store (the practice map
      is ingested first, untimed), with DuckDB's default memory limit (80% of RAM);
    * ``moopt_limited``: the same with ``SET memory_limit`` (``--memory-limit``, default
      1GB) and a ``temp_directory``, to show the ingest spills to disk rather than holding
      the month in memory;
    * ``pandas.read_csv(path)`` with default options, and ``engine="pyarrow"``, as baselines.

    The month is written once with NumPy in chunks of a million rows (so generating it needs
    little memory) to ``outputs/bench/ingest/EPD_<rows>_<seed>.csv``, with the 26 columns of
    the ICB-era EPD (``moopt.sources.synthetic.EPD_COLUMNS``), about 6,300 fictional
    practices, 18,000 well-formed 15-character BNF codes, unique (practice, BNF code,
    quantity) keys, and the matching ``gp-reg-pat-prac-map`` file. Later runs reuse it
    (delete the folder to free the disk: 6.9 GB at full size). The moopt runs must accept
    every row: rows read = accepted = rows written, and the store's prescribing table holds
    that many rows.

How to run
    .venv/bin/python benchmarks/bench_ingest.py              (18,000,000 rows; minutes)
    .venv/bin/python benchmarks/bench_ingest.py --quick      (1,000,000 rows; seconds)
    options: --rows N, --seed, --keep (keep the temporary stores), --skip-pandas,
    --memory-limit 1GB (or none), --rss-cap-mb (default 12,000), --reserve-mb (default 2,000)

How to read the figures
    seconds is the contender's own work (the read or the ingest), timed inside its process;
    MB/s is file bytes / seconds; CPU s is the child's user + system time (it varies less
    than wall-clock time on a busy machine); peak RSS is the child's high-water resident
    memory (``ru_maxrss`` from ``os.wait4``), which includes about 170 MB for the interpreter
    and imports. A contender whose RSS passes ``--rss-cap-mb``, or that leaves the machine
    with less than ``--reserve-mb`` available, is stopped, so that a baseline cannot push a
    shared machine out of memory; its row then shows the cap as a lower bound on its peak
    memory. The file is read once before the contenders so they start from the same page
    cache. The ratios moopt/pandas are printed when both finished.

Measured on this machine (2 cores and 24 GB RAM shared with other work running at the same
time, so wall-clock seconds vary by up to a factor of two between runs; CPU seconds less),
18,000,000 rows, 6,909 MB, after the store stopped copying the staged month and ingest
gained its memory limit:

    contender                                            seconds   rows/s   MB/s  CPU s  peak RSS MB
    moopt ingest as a build runs it (limit 2GB)             61.7  291,710  112.0   68.6        2,187
    moopt ingest, DuckDB default limit (80% of RAM)         49.0  367,013  140.9   55.5        5,585
    moopt ingest, memory_limit=1GB                          57.5  312,981  120.1   74.2        1,213
    pandas.read_csv(path)                                   stopped at the 12,000 MB cap after 19.7 s
    pandas.read_csv(path, engine="pyarrow")                 stopped at the 12,000 MB cap after 27.2 s

    The limited runs spilled 3.1 GB (2GB) and 3.8 GB (1GB) to the spill folder and kept
    memory bounded; without a limit DuckDB keeps most of the month in memory. Before the
    store's copies were removed the unlimited run peaked at 6,951 MB. Neither pandas
    baseline fits in 12 GB, so at full size there is no time ratio; at 4,000,000 rows
    (1,535 MB) pandas took 7.6 s (C engine, peak 3,711 MB) and 13.2 s (pyarrow, 4,228 MB)
    against 15.6 s / 1,675 MB for moopt without a limit: moopt/pandas about 2.1 in time and
    0.45 in peak memory, while moopt also validates every row and writes the store. With
    ``--quick`` (1,000,000 rows) the same run prints the ratios directly (about 3.4 in time
    and 0.54 in memory against the C engine, 1.1 and 0.44 against pyarrow).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "outputs" / "bench" / "ingest"
FULL_ROWS = 18_000_000
QUICK_ROWS = 1_000_000
CHUNK_ROWS = 1_000_000
N_PRACTICES = 6_300
N_PCNS = 1_250
N_SUB_ICBS = 106
N_ICBS = 42
N_REGIONS = 7
N_PRESENTATIONS = 18_000  # distinct BNF presentations in a real month are of this order
PACK_SIZES = np.array([1, 2, 7, 14, 21, 28, 30, 56, 60, 84, 90, 100, 112, 168], dtype=np.float64)
YEAR_MONTH = 202506
POLL_SECONDS = 0.2
MB = 1e6


# ---------------------------------------------------------------------------------------------
# Synthetic month
# ---------------------------------------------------------------------------------------------

_WORDS = np.array([
    "ASHBY", "BRACKEN", "CALDER", "DUNMORE", "ELMSTEAD", "FARLEIGH", "GARSDALE", "HOLMWOOD",
    "IVERTON", "KESWORTH", "LANGHAM", "MARLOW", "NETHERBY", "OAKRIDGE", "PENBURY", "QUARRINGTON",
    "REDFORD", "SALTMARSH", "THORNEY", "UPTON", "VALEWOOD", "WESTCOMBE", "YARROW", "ALDERHOLT",
    "BIRCHWOOD", "COPPERFIELD", "DRAYMORE", "EASTLEIGH", "FENWICK", "GLENMOOR", "HARTWELL",
    "KINGSMERE", "LINDHOLM", "MEADOWBANK", "NORTHWOLD", "ORCHARDLEA", "PRIORSFIELD", "RIVERSIDE",
])  # fmt: skip
_CHAPTERS = np.array([
    "01: Gastro-Intestinal System", "02: Cardiovascular System", "03: Respiratory System",
    "04: Central Nervous System", "05: Infections", "06: Endocrine System",
    "07: Obstetrics, Gynaecology and Urinary-Tract Disorders", "08: Malignant Disease and Immunosuppression",
    "09: Nutrition and Blood", "10: Musculoskeletal and Joint Diseases", "11: Eye",
    "12: Ear, Nose and Oropharynx", "13: Skin", "14: Immunological Products and Vaccines", "15: Anaesthesia",
])  # fmt: skip
_FORMS = np.array(["tablets", "capsules", "oral solution", "gastro-resistant tablets", "cream",
                   "modified-release tablets", "inhaler", "eye drops", "oral suspension", "soluble tablets"])
_ALNUM = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


def _words(rng: np.random.Generator, n: int, k: int = 1) -> np.ndarray:
    picked = rng.choice(_WORDS, size=(n, k))
    return np.array([" ".join(row) for row in picked]) if k > 1 else picked[:, 0]


def _organisations(seed: int) -> dict[str, np.ndarray]:
    """A fictional practice -> PCN -> sub-ICB -> ICB -> region structure, one entry per practice."""
    rng = np.random.default_rng([seed, 1])
    region_code = np.array([f"Y{56 + i}" for i in range(N_REGIONS)])
    region_name = np.array([f"{w} REGION" for w in _words(rng, N_REGIONS, 2)])
    icb_region = np.arange(N_ICBS) % N_REGIONS
    letters = np.array(list("ABCDEFGHJKLMNPRSTUVWXY"))
    icb_code = np.array([f"Q{a}{b}" for a, b in zip(letters[np.arange(N_ICBS) // len(letters)],
                                                   letters[np.arange(N_ICBS) % len(letters)])])
    icb_name = np.array([f"NHS {w} INTEGRATED CARE BOARD" for w in _words(rng, N_ICBS, 2)])
    sub_icb = np.concatenate([np.arange(N_ICBS), rng.integers(0, N_ICBS, N_SUB_ICBS - N_ICBS)])
    sub_code = np.array([f"{i // 26:02d}{chr(65 + i % 26)}" for i in range(N_SUB_ICBS)])
    sub_name = np.array([f"NHS {w} ICB - {c}" for w, c in zip(_words(rng, N_SUB_ICBS), sub_code)])
    pcn_sub = np.concatenate([np.arange(N_SUB_ICBS), rng.integers(0, N_SUB_ICBS, N_PCNS - N_SUB_ICBS)])
    pcn_code = np.array([f"U{70000 + i}" for i in range(N_PCNS)])
    pcn_name = np.array([f"{w} PCN" for w in _words(rng, N_PCNS, 2)])
    practice_pcn = np.concatenate([np.arange(N_PCNS), rng.integers(0, N_PCNS, N_PRACTICES - N_PCNS)])
    sub = pcn_sub[practice_pcn]
    icb = sub_icb[sub]
    region = icb_region[icb]
    n = N_PRACTICES
    postcode = np.array([f"{area}{district} {sector}{unit}" for area, district, sector, unit in zip(
        rng.choice(["FA", "FB", "JC", "KD", "OE", "UF"], n), rng.integers(1, 30, n), rng.integers(1, 10, n),
        np.char.add(rng.choice(list("ABDEFGHJLN"), n), rng.choice(list("PQRSTUWXYZ"), n)))])
    return {
        "practice_code": np.array([f"{'STVXZ'[i % 5]}{10000 + i:05d}" for i in range(n)]),
        "practice_name": np.array([f"{w} SURGERY" for w in _words(rng, n, 2)]),
        "address_1": np.array([f"{k} {w} ROAD" for k, w in zip(rng.integers(1, 200, n), _words(rng, n))]),
        "address_2": np.array([f"{w} HEALTH CENTRE" for w in _words(rng, n)]),
        "address_3": _words(rng, n),
        "address_4": np.array([f"{w}SHIRE" for w in _words(rng, n)]),
        "postcode": postcode,
        "pcn_code": pcn_code[practice_pcn], "pcn_name": pcn_name[practice_pcn],
        "sub_icb_code": sub_code[sub], "sub_icb_name": sub_name[sub],
        "ons_sub_icb": np.array([f"E38{100 + i:06d}" for i in sub]),
        "icb_code": icb_code[icb], "icb_name": icb_name[icb],
        "ons_icb": np.array([f"E54{20 + i:06d}" for i in icb]),
        "region_code": region_code[region], "region_name": region_name[region],
        "ons_region": np.array([f"E40{10 + i:06d}" for i in region]),
    }


def _presentations(seed: int) -> dict[str, np.ndarray]:
    """Fictional but well-formed 15-character BNF presentation codes with names and prices."""
    rng = np.random.default_rng([seed, 2])
    n = N_PRESENTATIONS
    chapter = rng.integers(0, len(_CHAPTERS), n)
    head = np.char.add(np.char.zfill((chapter + 1).astype(str), 2),
                       np.char.zfill(rng.integers(1, 10, n).astype(str), 2))
    head = np.char.add(head, np.char.zfill(rng.integers(1, 10, n).astype(str), 2))
    head = np.char.add(head, rng.integers(0, 10, n).astype(str))
    chemical = np.char.add(head, np.char.add(_ALNUM[rng.integers(0, 36, n)], _ALNUM[rng.integers(10, 36, n)]))
    # Characters 10-15 (product, strength, equivalent) spell a distinct number in base 26, so
    # every code is distinct whatever the chemical part.
    serial = rng.permutation(26**4)[:n]
    digits = (serial[:, None] // 26 ** np.arange(5, -1, -1)) % 26
    tail = np.array(["".join(row) for row in np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))[digits]])
    code = np.char.add(chemical, tail)
    substance = np.array([f"{w.title()}ate" for w in _words(rng, n)])
    strength = rng.choice([1, 2.5, 5, 10, 20, 25, 40, 50, 100, 250, 500], n)
    name = np.array([f"{s} {g:g}mg {f}" for s, g, f in zip(substance, strength, _FORMS[rng.integers(0, len(_FORMS), n)])])
    return {
        "chemical": chemical, "substance": substance, "code": code, "name": name,
        "chapter": _CHAPTERS[chapter],
        "unit_price": np.round(rng.lognormal(-2.0, 1.2, n), 4),
        "adq_per_unit": np.where(rng.random(n) < 0.3, 0.0, np.round(rng.lognormal(0.0, 0.6, n), 3)),
    }


def _row_counts(rows: int, seed: int) -> np.ndarray:
    """Rows per practice, skewed like list sizes, summing to ``rows``; each below the key space."""
    rng = np.random.default_rng([seed, 3])
    weight = rng.lognormal(0.0, 0.55, N_PRACTICES)
    exact = weight / weight.sum() * rows
    counts = np.floor(exact).astype(np.int64)
    short = rows - counts.sum()
    counts[np.argsort(exact - counts)[::-1][:short]] += 1
    key_space = N_PRESENTATIONS * len(PACK_SIZES)
    if counts.max() > key_space:
        raise ValueError(f"{rows:,} rows need more than {key_space:,} keys for one practice; "
                         "ask for fewer rows.")
    return counts


def write_synthetic_month(rows: int, seed: int, folder: Path) -> tuple[Path, Path]:
    """Write (or reuse) ``EPD_<rows>_<seed>.csv`` and its practice map in ``folder``.

    The EPD file has the 26 columns of the ICB-era English Prescribing Dataset with
    practice-contiguous rows and unique (practice, BNF code, quantity per item) keys. It is
    written in chunks of ``CHUNK_ROWS`` rows, so generating it needs little memory.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from moopt.sources.synthetic import EPD_COLUMNS, MAP_COLUMNS

    if rows < 1:
        raise ValueError(f"The number of rows must be at least 1, not {rows}.")
    folder.mkdir(parents=True, exist_ok=True)
    epd_path = folder / f"EPD_{rows}_{seed}.csv"
    map_path = folder / f"gp-reg-pat-prac-map_{seed}.csv"
    orgs = _organisations(seed)
    if not map_path.exists():
        n = N_PRACTICES
        columns = {
            "PUBLICATION": ["GP_PRAC_PAT_LIST"] * n, "EXTRACT_DATE": ["01Jun2025"] * n,
            "PRACTICE_CODE": orgs["practice_code"], "PRACTICE_NAME": orgs["practice_name"],
            "PRACTICE_POSTCODE": orgs["postcode"], "PCN_CODE": orgs["pcn_code"], "PCN_NAME": orgs["pcn_name"],
            "ONS_SUB_ICB_LOCATION_CODE": orgs["ons_sub_icb"], "SUB_ICB_LOCATION_CODE": orgs["sub_icb_code"],
            "SUB_ICB_LOCATION_NAME": orgs["sub_icb_name"], "ONS_ICB_CODE": orgs["ons_icb"],
            "ICB_CODE": orgs["icb_code"], "ICB_NAME": orgs["icb_name"], "ONS_COMM_REGION_CODE": orgs["ons_region"],
            "COMM_REGION_CODE": orgs["region_code"], "COMM_REGION_NAME": orgs["region_name"],
            "SUPPLIER_NAME": ["EMIS"] * n,
        }
        assert tuple(columns) == MAP_COLUMNS
        _write_atomic(map_path, lambda handle: pacsv.write_csv(
            pa.table({k: pa.array(np.asarray(v)) for k, v in columns.items()}), handle,
            pacsv.WriteOptions(include_header=False, quoting_style="none")), MAP_COLUMNS)
    if epd_path.exists():
        print(f"reusing {epd_path} ({epd_path.stat().st_size / MB:,.0f} MB)")
        return epd_path, map_path

    started = time.perf_counter()
    bnf = _presentations(seed)
    counts = _row_counts(rows, seed)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    key_space = N_PRESENTATIONS * len(PACK_SIZES)
    stride = 7_919  # a prime not dividing key_space: j -> j * stride mod key_space is one-to-one
    assert np.gcd(stride, key_space) == 1
    offset = np.random.default_rng([seed, 4]).integers(0, key_space, N_PRACTICES)
    practice_strings = {k: pa.array(orgs[k]) for k in (
        "region_name", "region_code", "icb_name", "icb_code", "sub_icb_name", "practice_name", "practice_code",
        "address_1", "address_2", "address_3", "address_4", "postcode")}
    pco_code = pa.array(np.char.add(orgs["sub_icb_code"], "00"))
    bnf_strings = {k: pa.array(bnf[k]) for k in ("chemical", "substance", "code", "name", "chapter")}
    flag = pa.array(["N"])

    def write_rows(handle) -> None:
        for chunk, first in enumerate(range(0, rows, CHUNK_ROWS)):
            row = np.arange(first, min(first + CHUNK_ROWS, rows), dtype=np.int64)
            rng = np.random.default_rng([seed, 100 + chunk])
            practice = np.searchsorted(starts, row, side="right") - 1
            key = (offset[practice] + (row - starts[practice]) * stride) % key_space
            presentation, pack = np.divmod(key, len(PACK_SIZES))
            quantity = PACK_SIZES[pack]
            items = rng.geometric(0.35, row.size)
            total = quantity * items
            nic = np.round(total * bnf["unit_price"][presentation] + 0.01, 2)
            p_idx, b_idx = pa.array(practice), pa.array(presentation)
            table = pa.table({
                "YEAR_MONTH": pa.array(np.full(row.size, YEAR_MONTH, dtype=np.int64)),
                "REGIONAL_OFFICE_NAME": practice_strings["region_name"].take(p_idx),
                "REGIONAL_OFFICE_CODE": practice_strings["region_code"].take(p_idx),
                "ICB_NAME": practice_strings["icb_name"].take(p_idx),
                "ICB_CODE": practice_strings["icb_code"].take(p_idx),
                "PCO_NAME": practice_strings["sub_icb_name"].take(p_idx),
                "PCO_CODE": pco_code.take(p_idx),
                "PRACTICE_NAME": practice_strings["practice_name"].take(p_idx),
                "PRACTICE_CODE": practice_strings["practice_code"].take(p_idx),
                "ADDRESS_1": practice_strings["address_1"].take(p_idx),
                "ADDRESS_2": practice_strings["address_2"].take(p_idx),
                "ADDRESS_3": practice_strings["address_3"].take(p_idx),
                "ADDRESS_4": practice_strings["address_4"].take(p_idx),
                "POSTCODE": practice_strings["postcode"].take(p_idx),
                "BNF_CHEMICAL_SUBSTANCE": bnf_strings["chemical"].take(b_idx),
                "CHEMICAL_SUBSTANCE_BNF_DESCR": bnf_strings["substance"].take(b_idx),
                "BNF_CODE": bnf_strings["code"].take(b_idx),
                "BNF_DESCRIPTION": bnf_strings["name"].take(b_idx),
                "BNF_CHAPTER_PLUS_CODE": bnf_strings["chapter"].take(b_idx),
                "QUANTITY": pa.array(quantity),
                "ITEMS": pa.array(items.astype(np.int64)),
                "TOTAL_QUANTITY": pa.array(total),
                "ADQUSAGE": pa.array(np.round(total * bnf["adq_per_unit"][presentation], 3)),
                "NIC": pa.array(nic),
                "ACTUAL_COST": pa.array(np.round(nic * 0.931 + 0.01 * items, 5)),
                "UNIDENTIFIED": flag.take(pa.array(np.zeros(row.size, dtype=np.int64))),
            })
            assert tuple(table.column_names) == EPD_COLUMNS
            pacsv.write_csv(table, handle, pacsv.WriteOptions(include_header=False, quoting_style="needed"))

    _write_atomic(epd_path, write_rows, EPD_COLUMNS)
    seconds = time.perf_counter() - started
    size = epd_path.stat().st_size
    print(f"generated {epd_path.name}: {rows:,} rows, {size / MB:,.0f} MB ({size / rows:.0f} bytes a row) "
          f"in {seconds:.1f} s")
    return epd_path, map_path


def _write_atomic(path: Path, write_body, header: tuple[str, ...]) -> None:
    """Write a header line and a body via a temporary file, so a half-written file is never reused."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write((",".join(header) + "\n").encode())
            write_body(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Contenders (each runs in its own child process)
# ---------------------------------------------------------------------------------------------


def _child(args: argparse.Namespace) -> None:
    """Run one contender and write its figures as JSON to ``args.result``."""
    result: dict = {"contender": args.child}
    if args.child in ("pandas", "pandas_pyarrow"):
        import pandas as pd

        result["import_rss_mb"] = _self_peak_mb()
        started = time.perf_counter()
        frame = pd.read_csv(args.csv) if args.child == "pandas" else pd.read_csv(args.csv, engine="pyarrow")
        result["seconds"] = time.perf_counter() - started
        result["rows"] = len(frame)
        result["frame_mb"] = float(frame.memory_usage(deep=True).sum()) / MB
    else:
        from moopt.store import Store

        result["import_rss_mb"] = _self_peak_mb()
        workdir = Path(args.workdir)
        from moopt.config import DEFAULTS

        store = Store(workdir / "store.duckdb")
        # "moopt": the limit a build uses (data.ingest_memory_limit); "moopt_limited": --memory-limit;
        # "moopt_unlimited": DuckDB's own default (80% of RAM), to show what the limit saves.
        limit = {"moopt": DEFAULTS["data"]["ingest_memory_limit"], "moopt_limited": args.memory_limit,
                 "moopt_unlimited": None}[args.child]
        org = store.ingest_organisations(args.map)
        if org.rows_rejected:
            raise RuntimeError(f"organisation map rows rejected: {org.line()}")
        with store.memory_limit(limit):
            result["duckdb_memory_limit"] = store.con.execute(
                "SELECT current_setting('memory_limit')").fetchall()[0][0]
            result["duckdb_threads"] = store.con.execute("SELECT current_setting('threads')").fetchall()[0][0]
            started = time.perf_counter()
            report = store.ingest_prescribing(args.csv)
            result["seconds"] = time.perf_counter() - started
        result.update(rows=report.rows_read, rows_read=report.rows_read, accepted=report.rows_accepted,
                      rejected=report.rows_rejected, reasons=report.reasons)
        result["stored"] = store.con.execute("SELECT count(*) FROM prescribing").fetchall()[0][0]
        store.close()
        result["store_mb"] = (workdir / "store.duckdb").stat().st_size / MB
    Path(args.result).write_text(json.dumps(result))


def _self_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _available_kb() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def run_contender(kind: str, csv: Path, org_map: Path, workdir: Path, memory_limit: str,
                  rss_cap_mb: float, reserve_mb: float) -> dict:
    """Run one contender in a child process; add its peak RSS and largest spill to its figures.

    Peak RSS is the child's own high-water mark (``ru_maxrss`` from ``os.wait4``). The child is
    stopped if its RSS passes ``rss_cap_mb`` or the machine's available memory falls below
    ``reserve_mb``, to protect other work on a shared machine; its figures then say so.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    result_file = workdir / f"{kind}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--csv", str(csv),
               "--map", str(org_map), "--workdir", str(workdir), "--result", str(result_file),
               "--memory-limit", memory_limit]
    started = time.perf_counter()
    process = subprocess.Popen(command)
    stopped = ""
    largest_spill = 0
    while True:
        # wait4 reports this child's own resource use, including its high-water RSS in kB.
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        rss_mb = _status_kb(process.pid, "VmRSS") / 1024
        if rss_mb > rss_cap_mb:
            stopped = f"stopped: RSS passed the {rss_cap_mb:,.0f} MB cap"
        elif _available_kb() / 1024 < reserve_mb:
            stopped = f"stopped: machine's available memory fell below {reserve_mb:,.0f} MB"
        if stopped:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            break
        largest_spill = max(largest_spill, _folder_bytes(workdir / "spill"), _folder_bytes(workdir / "store.duckdb.tmp"))
        time.sleep(POLL_SECONDS)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    figures = {"contender": kind, "wall_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024,
               "spill_mb": largest_spill / MB, "cpu_seconds": usage.ru_utime + usage.ru_stime}
    if stopped or process.returncode != 0 or not result_file.exists():
        figures["failed"] = stopped or f"exit code {process.returncode}"
        return figures
    figures.update(json.loads(result_file.read_text()))
    return figures


LABELS = {
    "moopt": "moopt ingest as a build runs it (data.ingest_memory_limit 2GB)",
    "moopt_unlimited": "moopt Store.ingest_prescribing, DuckDB default memory limit",
    "moopt_limited": "moopt Store.ingest_prescribing, memory_limit={limit}",
    "pandas": "pandas.read_csv(path) (C engine, defaults)",
    "pandas_pyarrow": "pandas.read_csv(path, engine='pyarrow')",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="rows in the synthetic month (default 18M)")
    parser.add_argument("--quick", action="store_true", help=f"use {QUICK_ROWS:,} rows")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the temporary stores")
    parser.add_argument("--skip-pandas", action="store_true", help="run only the moopt contenders")
    parser.add_argument("--memory-limit", default="1GB",
                        help="DuckDB memory_limit for the limited moopt run; 'none' skips that run")
    parser.add_argument("--rss-cap-mb", type=float, default=12_000,
                        help="stop a contender whose RSS passes this (shared machine safety)")
    parser.add_argument("--reserve-mb", type=float, default=2_000,
                        help="stop a contender if the machine's available memory falls below this")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--map", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    rows = QUICK_ROWS if args.quick else args.rows
    if rows < 1:
        parser.error("--rows must be at least 1")

    csv, org_map = write_synthetic_month(rows, args.seed, CACHE)
    file_bytes = csv.stat().st_size
    # Read the file once so every contender starts from the same page cache (as far as memory allows).
    started = time.perf_counter()
    with open(csv, "rb") as handle:
        while handle.read(64 << 20):
            pass
    print(f"read the file once in {time.perf_counter() - started:.1f} s to warm the page cache")

    kinds = ["moopt", "moopt_unlimited"] + ([] if args.memory_limit.lower() == "none" else ["moopt_limited"])
    kinds += [] if args.skip_pandas else ["pandas", "pandas_pyarrow"]
    base = Path(tempfile.mkdtemp(prefix="moopt-bench-ingest-"))
    results = []
    try:
        for kind in kinds:
            label = LABELS[kind].format(limit=args.memory_limit)
            print(f"running {label} ...", flush=True)
            figures = run_contender(kind, csv, org_map, base / kind, args.memory_limit,
                                    args.rss_cap_mb, args.reserve_mb)
            figures["label"] = label
            results.append(figures)
            if "failed" in figures:
                print(f"  {figures['failed']} after {figures['wall_seconds']:.1f} s, "
                      f"peak RSS {figures['peak_rss_mb']:,.0f} MB")
                continue
            if kind.startswith("moopt"):
                print(f"  {figures['rows_read']:,} rows read, {figures['accepted']:,} accepted, "
                      f"{figures['rejected']:,} rejected; store holds {figures['stored']:,}; "
                      f"DuckDB memory_limit {figures['duckdb_memory_limit']}, threads {figures['duckdb_threads']}; "
                      f"largest spill {figures['spill_mb']:,.0f} MB; store file {figures['store_mb']:,.0f} MB; "
                      f"interpreter and imports {figures['import_rss_mb']:,.0f} MB")
                assert figures["rows_read"] == rows and figures["accepted"] == rows, figures
                assert figures["rejected"] == 0 and figures["stored"] == rows, figures
            else:
                print(f"  {figures['rows']:,} rows; DataFrame {figures['frame_mb']:,.0f} MB (deep); "
                      f"interpreter and imports {figures['import_rss_mb']:,.0f} MB")
                assert figures["rows"] == rows, figures
    finally:
        if args.keep:
            print(f"stores kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    print(f"\nfile: {csv.name}, {rows:,} rows, {file_bytes / MB:,.0f} MB; {os.cpu_count()} cores\n")
    header = f"{'contender':<62} {'rows':>12} {'seconds':>8} {'rows/s':>11} {'MB/s':>7} {'CPU s':>7} {'peak RSS MB':>12}"
    print(header)
    print("-" * len(header))
    for r in results:
        if "failed" in r:
            print(f"{r['label']:<62} {'-':>12} {r['wall_seconds']:>8.1f} {'-':>11} {'-':>7} {r['cpu_seconds']:>7.1f} "
                  f"{r['peak_rss_mb']:>12,.0f}  ({r['failed']})")
            continue
        print(f"{r['label']:<62} {r['rows']:>12,} {r['seconds']:>8.1f} {r['rows'] / r['seconds']:>11,.0f} "
              f"{file_bytes / MB / r['seconds']:>7.1f} {r['cpu_seconds']:>7.1f} {r['peak_rss_mb']:>12,.0f}")
    done = {r["contender"]: r for r in results if "failed" not in r}
    for moopt in ("moopt", "moopt_limited"):
        for baseline in ("pandas", "pandas_pyarrow"):
            if moopt in done and baseline in done:
                m, b = done[moopt], done[baseline]
                print(f"{moopt} / {baseline}: seconds {m['seconds'] / b['seconds']:.2f}, "
                      f"peak RSS {m['peak_rss_mb'] / b['peak_rss_mb']:.2f}")
    print("seconds: the contender's own work (read or ingest), timed inside its process; "
          "peak RSS: the process's high-water resident memory (includes the interpreter and imports).")


if __name__ == "__main__":
    main()
