"""The run manifest's provenance, and reproducibility: the same inputs and parameters give the same results."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml
from factories import copy_project

from moopt import provenance
from moopt.pipeline import DataFiles
from moopt.provenance import (
    ChecksumCache,
    data_files,
    file_record,
    package_data_files,
    row_counts,
    sha256_file,
    source_commit,
)
from moopt.store import IngestReport
from moopt.tables import TABLES

# -- checksums ------------------------------------------------------------------------------------------


def test_sha256_of_a_file_is_that_of_its_bytes(tmp_path, monkeypatch):
    path = tmp_path / "abc.txt"
    path.write_bytes(b"abc")
    # The published SHA-256 test vector for "abc" (FIPS 180-2, appendix B.1).
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1000) * 5000)  # several read blocks once the block is made small
    monkeypatch.setattr(provenance, "HASH_BLOCK_BYTES", 4096)
    assert sha256_file(big) == hashlib.sha256(big.read_bytes()).hexdigest()


def test_checksum_cache_rehashes_only_changed_files(tmp_path, monkeypatch):
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    cache_file = tmp_path / "store" / "input_checksums.json"
    hashed: list[Path] = []
    real = provenance.sha256_file
    monkeypatch.setattr(provenance, "sha256_file", lambda p: hashed.append(Path(p)) or real(p))

    first = ChecksumCache(cache_file)
    assert first.digest(data) == (8, hashlib.sha256(b"a,b\n1,2\n").hexdigest())
    first.save()
    assert json.loads(cache_file.read_text())[str(data.resolve())]["sha256"] == real(data)

    again = ChecksumCache(cache_file)  # a later build: read from the file, not hashed
    assert again.digest(data)[1] == real(data) and len(hashed) == 1

    data.write_text("a,b\n1,3\n")  # same size, new content and modification time
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 10_000_000))
    assert again.digest(data)[1] == hashlib.sha256(b"a,b\n1,3\n").hexdigest() and len(hashed) == 2


def test_a_damaged_checksum_cache_is_rebuilt_not_trusted(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("x\n")
    cache_file = tmp_path / "input_checksums.json"
    cache_file.write_text("{not json")
    assert ChecksumCache(cache_file).digest(data)[1] == hashlib.sha256(b"x\n").hexdigest()


def test_file_record_of_a_missing_file_says_so(tmp_path):
    record = file_record(tmp_path / "gone.csv", "prescribing")
    assert record["sha256"] is None and record["size"] is None
    assert "could not be read" in record["error"] and record["path"].endswith("gone.csv")


# -- the source commit ----------------------------------------------------------------------------------


def _git(folder: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    return subprocess.run(
        ["git", "-C", str(folder), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_source_commit_and_dirty_flag_of_a_checkout(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "pkg" / "code.py").write_text("x = 1\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "first")
    clean = source_commit(repo / "pkg")
    assert clean["commit"] == _git(repo, "rev-parse", "HEAD") and len(clean["commit"]) == 40
    assert clean["dirty"] is False and clean["changed_paths"] == 0
    assert Path(clean["repository"]) == repo.resolve()

    (repo / "pkg" / "code.py").write_text("x = 2\n")
    dirty = source_commit(repo / "pkg")
    assert dirty["commit"] == clean["commit"] and dirty["dirty"] is True
    assert dirty["changed"] == [" M pkg/code.py"]


def test_source_commit_outside_a_checkout_is_null_with_a_reason(tmp_path, monkeypatch):
    plain = tmp_path / "installed"
    plain.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # do not find a checkout above
    record = source_commit(plain)
    assert record["commit"] is None and record["dirty"] is None
    assert "not in a git checkout" in record["reason"]

    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    without_git = source_commit(plain)
    assert without_git["commit"] is None and "git is not installed" in without_git["reason"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_moopt_knows_its_own_commit_when_run_from_a_checkout():
    root = Path(__file__).resolve().parents[1]
    if subprocess.run(["git", "-C", str(root), "rev-parse"], capture_output=True).returncode != 0:
        pytest.skip("the tests are not running from a git checkout")
    assert source_commit()["commit"] == _git(root, "rev-parse", "HEAD")


# -- files and row counts -------------------------------------------------------------------------------


def test_data_files_name_every_file_with_its_role(tmp_path):
    files = DataFiles(
        {"epraccur": "/d/epraccur.csv", "eccg": "/d/eccg.csv"},
        ["/d/EPD_1.csv", "/d/EPD_2.csv"],
        ["/d/ls.csv"],
        "/d/attributes.csv",
        False,
        "files",
        ["/d/qof.csv"],
        ["/d/chem.csv"],
    )
    assert data_files(files) == [
        ("organisations:eccg", Path("/d/eccg.csv")),
        ("organisations:epraccur", Path("/d/epraccur.csv")),
        ("practice_attributes", Path("/d/attributes.csv")),
        ("list_sizes", Path("/d/ls.csv")),
        ("prescribing", Path("/d/EPD_1.csv")),
        ("prescribing", Path("/d/EPD_2.csv")),
        ("reference", Path("/d/chem.csv")),
        ("supplied", Path("/d/qof.csv")),
    ]


def test_package_data_files_include_every_lookup_the_definitions_load():
    from moopt.indicators import load_indicators
    from moopt.indicators.lookups import load_lookups

    listed = package_data_files()
    assert all(path.is_file() for _, path in listed)
    lookups = {path for role, path in listed if role == "lookup"}
    assert lookups == {lookup.path for lookup in load_lookups().values()} and lookups
    assert {path.stem for role, path in listed if role == "definition"} == {
        i.id for i in load_indicators()
    }


def test_row_counts_add_up_per_source():
    reports = [
        IngestReport(
            "a.csv", "epd", "prescribing", 100, 97, 3, reasons={"bad code": 2, "no month": 1}
        ),
        IngestReport("b.csv", "epd", "prescribing", 50, 50, 0, skipped=True, rows_set_aside=4),
        IngestReport("m.csv", "map", "organisations", 10, 9, 1, reasons={"bad code": 1}),
    ]
    counts = row_counts(reports)
    rx = counts["by_source"]["prescribing"]
    assert (
        rx["files"],
        rx["files_unchanged"],
        rx["rows_read"],
        rx["rows_accepted"],
        rx["rows_rejected"],
        rx["rows_set_aside"],
    ) == (2, 1, 150, 147, 3, 4)
    assert rx["reasons"] == {"bad code": 2, "no month": 1}
    assert counts["total"]["rows_read"] == 160 and counts["total"]["reasons"] == {
        "bad code": 3,
        "no month": 1,
    }
    assert list(counts["by_source"]) == ["organisations", "prescribing"]


# -- two builds from the same inputs and parameters -----------------------------------------------------

# Each results table sorted by the columns that identify a row (then by every other column, so the
# order is total whatever the grain).
SORT_KEYS = {
    "run_facts": [],
    "indicator_values": ["indicator_id", "org_level", "org_code", "period_type", "period"],
    "indicator_results": ["indicator_id", "org_level", "org_code", "period_type", "period"],
    "funnel_parameters": ["indicator_id", "org_level", "period_type", "period"],
    "funnel_lines": ["indicator_id", "org_level", "period_type", "period", "denominator"],
    "spc_points": ["indicator_id", "org_level", "org_code", "period_type", "period"],
    "spc_series": ["indicator_id", "org_level", "org_code"],
    "trends": ["indicator_id", "org_level", "org_code"],
    "results_digests": ["indicator_id"],
    "breakdown_results": [
        "indicator_id",
        "org_level",
        "org_code",
        "period_type",
        "period",
        "breakdown",
    ],
}
# engine_report is JSON holding the stages' timings besides the row counts; only the timings
# are left out of the comparison (every other field of it, and every other column, must match).
TIMING_FIELDS = ("seconds", "phase_seconds")


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _export_tables(outputs: Path, folder: Path) -> dict[str, bytes]:
    """Every results table, sorted, as CSV and Parquet bytes written by DuckDB."""
    folder.mkdir()
    con = duckdb.connect(str(outputs / "store" / "moopt.duckdb"), read_only=True)
    exported = {}
    try:
        for name, table in TABLES.items():
            columns = table.column_names
            assert set(SORT_KEYS[name]) <= set(columns), name
            order = [*SORT_KEYS[name], *[c for c in columns if c not in SORT_KEYS[name]]]
            select = [c if c != "engine_report" else "NULL AS engine_report" for c in columns]
            query = f"SELECT {', '.join(select)} FROM {name} ORDER BY {', '.join(order)}"
            for kind in ("csv", "parquet"):
                path = folder / f"{name}.{kind}"
                con.execute(f"COPY ({query}) TO '{path}' (FORMAT {kind})")
                exported[path.name] = path.read_bytes()
        report = con.execute("SELECT engine_report FROM run_facts").fetchall()[0][0]
        exported["engine_report without timings"] = json.dumps(
            _without_timings(json.loads(report)), sort_keys=True
        ).encode()
    finally:
        con.close()
    return exported


def _downloads(outputs: Path) -> dict[str, bytes]:
    return {
        p.relative_to(outputs / "csv").as_posix(): p.read_bytes()
        for p in sorted((outputs / "csv").rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A project with one synthetic set as its input files, built twice into two outputs folders."""
    from moopt.cli import main

    project = copy_project(tmp_path_factory.mktemp("repro_project"))
    inputs = project / "inputs"
    cwd = os.getcwd()
    os.chdir(project)
    try:
        assert main(["synth", "--scale", "small", "--out", str(inputs)]) == 0
        mapping = inputs / "organisations" / "gp-reg-pat-prac-map.csv"
        first_sub_icb = sorted(pd.read_csv(mapping, dtype=str)["SUB_ICB_LOCATION_CODE"].unique())[0]
        run = {
            "title": "Reproducibility check",
            "data": {
                "source": "files",
                "epd": sorted(str(p.relative_to(project)) for p in (inputs / "epd").glob("*.csv")),
                "list_sizes": sorted(
                    str(p.relative_to(project)) for p in (inputs / "list_sizes").glob("*.csv")
                ),
                "organisations": str(mapping.relative_to(project)),
                "practice_attributes": "inputs/organisations/practice_attributes.csv",
                "supplied": sorted(
                    str(p.relative_to(project)) for p in (inputs / "supplied").glob("*.csv")
                ),
            },
            "organisations": {"level": "sub_icb", "codes": [first_sub_icb]},
            "themes": ["safety", "antimicrobials"],
        }
        (project / "parameters" / "repro.yml").write_text(yaml.safe_dump(run))
        for outputs in ("outputs_a", "outputs_b"):
            assert (
                main(
                    ["build", "--params", "parameters/repro.yml", "--outputs", outputs, "--no-site"]
                )
                == 0
            )
    finally:
        os.chdir(cwd)
    return project, project / "outputs_a", project / "outputs_b"


@pytest.mark.slow
def test_two_builds_from_the_same_inputs_give_identical_results_and_downloads(two_builds, tmp_path):
    _, first, second = two_builds
    tables_a = _export_tables(first, tmp_path / "a")
    tables_b = _export_tables(second, tmp_path / "b")
    assert list(tables_a) == list(tables_b)
    differing = [name for name in tables_a if tables_a[name] != tables_b[name]]
    assert differing == [], f"results differ between two builds of the same inputs: {differing}"
    # The comparison is over real content: every results table has rows.
    con = duckdb.connect(str(first / "store" / "moopt.duckdb"), read_only=True)
    try:
        empty = [
            n for n in TABLES if con.execute(f"SELECT count(*) FROM {n}").fetchall()[0][0] == 0
        ]
    finally:
        con.close()
    assert empty == []

    downloads_a, downloads_b = _downloads(first), _downloads(second)
    assert len(downloads_a) > 20 and sorted(downloads_a) == sorted(downloads_b)
    assert [p for p in downloads_a if downloads_a[p] != downloads_b[p]] == []


@pytest.mark.slow
def test_manifest_records_inputs_source_counts_and_stages(two_builds):
    project, first, second = two_builds
    manifest = json.loads((first / "run_manifest.json").read_text())
    other = json.loads((second / "run_manifest.json").read_text())
    # The keys the site reads are still there.
    assert {
        "title",
        "organisations",
        "themes",
        "notebooks",
        "ingest",
        "engine",
        "parameters",
    } <= set(manifest)

    inputs = manifest["inputs"]
    data = {
        Path(r["path"])
        for r in inputs
        if r["role"]
        in ("prescribing", "list_sizes", "supplied", "organisations", "practice_attributes")
    }
    on_disk = {p.resolve() for p in (project / "inputs").rglob("*.csv")}
    assert data == on_disk
    one = next(r for r in inputs if r["role"] == "prescribing")
    assert one["sha256"] == hashlib.sha256(Path(one["path"]).read_bytes()).hexdigest()
    assert one["size"] == Path(one["path"]).stat().st_size
    assert inputs[0]["role"] == "parameters" and inputs[0]["path"] == str(
        project / "parameters" / "repro.yml"
    )
    assert any(r["role"] == "lookup" for r in inputs)
    assert inputs == other["inputs"]  # the same files, the same checksums

    resolved = manifest["resolved_parameters"]
    assert resolved["org_codes"] == manifest["parameters"]["organisations"]["codes"]
    assert resolved["outputs_dir"] == str(first) and other["resolved_parameters"][
        "outputs_dir"
    ] == str(second)
    assert resolved["epd_files"] == [r["path"] for r in inputs if r["role"] == "prescribing"]

    assert manifest["source"]["moopt_version"] == manifest["moopt_version"]
    assert manifest["source"]["commit"] == other["source"]["commit"]

    counts = manifest["row_counts"]
    reports = manifest["ingest"]
    rx = counts["by_source"]["prescribing"]
    assert rx["files"] == len(resolved["epd_files"])
    assert (
        rx["rows_read"] == sum(r["rows_read"] for r in reports if r["table"] == "prescribing") > 0
    )
    assert rx["rows_read"] == rx["rows_accepted"] + rx["rows_rejected"]
    assert counts == other["row_counts"]

    stages = {s["stage"]: s for s in manifest["stages"]}
    assert list(stages) == ["data", "ingest", "indicators", "notebooks"]
    assert all(s["status"] == "ok" and s["seconds"] >= 0 for s in stages.values())
    assert manifest["failures"] == []
    assert (first / "store" / "input_checksums.json").is_file()
