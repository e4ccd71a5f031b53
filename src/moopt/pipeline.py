"""The whole run: data -> store -> indicators -> notebooks -> site.

``build`` is what ``moopt build`` calls. Everything national (the indicator
table with its percentiles and deciles) is computed once, before any notebook
runs; each notebook then only selects, draws and explains.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import ibis
import pandas as pd

from moopt import __version__
from moopt.atomic import write_text_atomic
from moopt.config import ParameterError, RunConfig
from moopt.indicators.definitions import DEFINITIONS_DIR, Theme, built_themes, load_indicators
from moopt.indicators.engine import IndicatorEngine, proportion_overflow
from moopt.methodology import write_methodology
from moopt.provenance import run_provenance
from moopt.groupings import load_groupings
from moopt.preview import PreviewRequest, left_out_drafts, run_indicators, split_preview_jobs
from moopt.orgs import ENGLAND_CODE, GROUP_LEVEL, ORG_LEVEL_COLUMNS, ORG_LEVEL_LABELS, ORG_LEVEL_PLURALS, parent_levels
from moopt.build_lock import mark_finished, mark_unfinished, outputs_lock
from moopt.results import SeriesScope, compute_results
from moopt.runner import NotebookJob, NotebookResult, remove_interrupted_notebooks, run_notebooks
from moopt.site.build import remove_interrupted_site_folders
from moopt.tables import TABLES, check_columns, table_exists
from moopt.store import SCHEMA_VERSION, IngestReport, RunWindow, Store, ingest_files

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    ingest: list[IngestReport] = field(default_factory=list)
    notebooks: list[NotebookResult] = field(default_factory=list)
    site: dict | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def failures(self) -> list[NotebookResult]:
        return [r for r in self.notebooks if r.status != "ok"]

    @property
    def reused(self) -> list[NotebookResult]:
        """Notebooks taken unchanged from the last build (the build cache)."""
        return [r for r in self.notebooks if r.reused]


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str))


# -- data ----------------------------------------------------------------------------------------

@dataclass
class DataFiles:
    organisations: str | dict
    prescribing: list[str]
    list_sizes: list[str]
    practice_attributes: str | None
    synthetic: bool
    description: str
    supplied: list[str] = field(default_factory=list)
    reference: list[str] = field(default_factory=list)


def ensure_data(config: RunConfig, progress=None) -> DataFiles:
    """The run's input files; generate the synthetic set first when that is the source."""
    say = progress or (lambda msg: None)
    if config.data_source == "files":
        orgs = config.organisations_file
        org_paths = list(orgs.values()) if isinstance(orgs, dict) else [orgs]
        for key, paths in (("organisations", org_paths), ("epd", config.epd_files),
                           ("list_sizes", config.list_size_files)):
            for path in paths:
                if not Path(path).exists():
                    raise ParameterError(
                        f"Data file {path} does not exist (check data.{key} in "
                        f"{config.params_file or 'the parameters'}; relative paths are read from "
                        f"{config.project_dir}).")
        for key, paths in (("supplied", config.supplied_files), ("reference", config.reference_files)):
            for path in paths:
                if not Path(path).exists():
                    raise ParameterError(f"Data file {path} does not exist (check data.{key} in "
                                         f"{config.params_file or 'the parameters'}).")
        return DataFiles(config.organisations_file, sorted(config.epd_files), sorted(config.list_size_files),
                         config.practice_attributes_file, False, "Files named in the run parameters",
                         sorted(config.supplied_files), sorted(config.reference_files))
    folder = config.synthetic_dir
    manifest = read_synthetic_manifest(folder)
    if manifest is None or (config.synthetic_scale is not None and manifest.get("scale") != config.synthetic_scale):
        scale = config.synthetic_scale or "national"
        say(f"generating synthetic {scale} data in {folder} ...")
        started = time.perf_counter()
        make_synthetic(folder, scale, config.synthetic_seed, config.synthetic_end_month,
                       config.synthetic_months, say)
        manifest = read_synthetic_manifest(folder)
        say(f"synthetic data ready [{time.perf_counter() - started:.0f}s]")
    else:
        say(f"using the synthetic {manifest.get('scale')} data set already in {folder}")
    return DataFiles(
        organisations=str(folder / "organisations" / "gp-reg-pat-prac-map.csv"),
        prescribing=sorted(str(p) for p in (folder / "epd").glob("EPD_*.csv")),
        list_sizes=sorted(str(p) for p in (folder / "list_sizes").glob("*.csv")),
        practice_attributes=str(folder / "organisations" / "practice_attributes.csv"),
        synthetic=True,
        description=f"Synthetic data ({manifest.get('scale')} scale, seed {manifest.get('seed')})",
        supplied=sorted(str(p) for p in (folder / "supplied").glob("*.csv")),
    )


def read_synthetic_manifest(folder: Path) -> dict | None:
    """The manifest of a complete synthetic set (written last by the generator), or None."""
    path = Path(folder) / "synthetic_manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def make_synthetic(folder: Path, scale: str, seed: int, end_month: str, months: int, progress=None) -> dict:
    """Generate a synthetic set into ``folder``, replacing any set that is there."""
    import shutil

    from moopt.sources.synthetic import generate_synthetic

    folder = Path(folder)
    (folder / "synthetic_manifest.json").unlink(missing_ok=True)  # incomplete until rewritten
    for sub in ("epd", "list_sizes", "organisations", "supplied"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    summary = generate_synthetic(folder, scale=scale, seed=seed, end_month=end_month, n_months=months,
                                 progress=progress)
    from moopt.sources.synthetic_supplied import generate_supplied

    # The manifest marks a complete set, so it is moved aside until the supplied files exist too.
    manifest = folder / "synthetic_manifest.json"
    pending = manifest.with_name(".synthetic_manifest.pending")
    os.replace(manifest, pending)
    organisations = pd.read_csv(folder / "organisations" / "gp-reg-pat-prac-map.csv", dtype=str)
    summary["supplied"] = generate_supplied(folder, organisations, summary["months"], seed=seed)
    os.replace(pending, manifest)
    return summary


def data_set_id(files: DataFiles) -> str:
    """Identifies the set of input files, so a store built from another set is not reused."""
    h = hashlib.sha256(f"store schema {SCHEMA_VERSION}".encode())
    orgs = files.organisations
    org_paths = [f"{k}={v}" for k, v in sorted(orgs.items())] if isinstance(orgs, dict) else [orgs]
    for path in [*org_paths, *files.prescribing, *files.list_sizes, *files.supplied, *files.reference]:
        h.update(str(Path(path).resolve()).encode())
    if files.synthetic:
        manifest = read_synthetic_manifest(Path(files.organisations).parents[1]) or {}
        h.update(json.dumps({k: manifest.get(k) for k in ("seed", "scale", "months")}).encode())
    return h.hexdigest()


def run_window(config: RunConfig) -> RunWindow | None:
    """The months a run may use, when its period ends on a named month.

    The period's months plus the 11 before them, which the first 12-month rolling value
    needs. With ``period.end: latest`` the period is only known from the data: no window.
    """
    if config.period_end == "latest":
        return None
    end = pd.Period(config.period_end, freq="M")
    first = end - (config.period_months - 1) - 11
    return RunWindow(str(first), str(end))


def ingest_run(store: Store, config: RunConfig, files: DataFiles, progress=None) -> list[IngestReport]:
    """Ingest a run's files into ``store`` (marking the data set it was built from).

    One transaction: when the store was built from another set of files its tables are emptied
    first, and a refused file (or a run that stores no prescribing) leaves every table as it
    was, old data included.
    """
    say = progress or (lambda msg: None)
    data_set = data_set_id(files)
    with store.transaction():
        store.con.execute("CREATE TABLE IF NOT EXISTS store_info (key VARCHAR PRIMARY KEY, value VARCHAR)")
        held = dict(store.con.execute("SELECT key, value FROM store_info").fetchall())
        if held.get("data_set") not in (None, data_set):
            say("the input files differ from those the store was built from: its data are replaced "
                "(kept as they are if this run fails)")
            store.clear_data()
        store.con.execute("INSERT OR REPLACE INTO store_info VALUES ('data_set', ?)", [data_set])
        store.con.execute("INSERT OR REPLACE INTO store_info VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        reports = ingest_files(store, files.organisations, files.prescribing, files.list_sizes,
                               files.practice_attributes, config.max_reject_share, progress,
                               supplied=files.supplied, indicators=load_indicators(), window=run_window(config),
                               reference=files.reference, memory_limit=config.ingest_memory_limit,
                               month_drop_share=config.month_drop_warning_share)
        check_coverage(store, reports, progress)
    return reports


def check_coverage(store: Store, reports: list[IngestReport], progress=None) -> None:
    """Stop when no prescribing was stored, saying why; note months without list sizes."""
    say = progress or (lambda msg: None)
    rx_months = store.months()
    if not rx_months:
        rx = [r for r in reports if r.table == "prescribing"]
        why = "; ".join(r.line() for r in rx if not r.skipped) or "no prescribing files were read"
        raise ParameterError(
            "No prescribing rows were stored, so there is nothing to compute indicators from. "
            f"What the prescribing files gave: {why}. Rows for cost centres that are not GP practices are "
            f"not stored; rejected rows are listed with their reasons in {store.rejects_dir}.")
    ls_months = {m.strftime("%Y-%m") for (m,) in store.con.execute(
        "SELECT DISTINCT month FROM list_size").fetchall()}
    missing = [m for m in rx_months if m not in ls_months]
    if missing:
        shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
        held = f"{min(ls_months)} to {max(ls_months)}" if ls_months else "no months"
        say(f"note: no list sizes for {len(missing)} of the {len(rx_months)} prescribing months ({shown}); "
            f"the list sizes cover {held}. Indicators per patient or per STAR-PU are empty for those months.")


def reset_store_if_data_changed(store_path: Path, files: DataFiles, progress=None) -> None:
    """Start a new store when the store was written by a moopt with other table shapes.

    A store of the same shape built from other input files is kept: :func:`ingest_run`
    replaces its data inside one transaction, so a run that fails leaves it as it was.
    ``files`` is accepted for the callers; the data set is compared in :func:`ingest_run`.
    """
    if not Path(store_path).exists():
        return
    import duckdb

    con = duckdb.connect(str(store_path), read_only=True)
    try:
        rows = con.execute("SELECT value FROM store_info WHERE key = 'schema_version'").fetchall() \
            if table_exists(con, "store_info") else []
    finally:
        con.close()
    if not rows or rows[0][0] != str(SCHEMA_VERSION):
        if progress:
            progress("the store was written by a moopt with other table shapes: starting a new store")
        Path(store_path).unlink()
        wal = Path(str(store_path) + ".wal")
        wal.unlink(missing_ok=True)


# -- indicators --------------------------------------------------------------------------------------

PACKAGE_DIR = Path(__file__).parent
# Files under the package that can change a computed value: code, definitions, lookups.
SOURCE_SUFFIXES = (".py", ".yml", ".yaml", ".csv", ".json")
# Input tables hashed by content. Each holds rows that ingest_log does not fully account for
# (ODS organisation names are joined in from eccg/eauth files that are not logged) or is
# small enough to hash in well under a second; prescribing and list sizes, the large ones,
# come only from files that ingest_log records with size, time and run window.
CONTENT_KEYED_TABLES = ("organisations", "practice_attributes", "cost_centres", "supplied", "practice_groups")
# Libraries whose upgrade can change results.
RESULT_LIBRARIES = ("duckdb", "ibis", "pandas", "numpy", "scipy")


def package_source_digest(package_dir: Path | None = None, exclude: Path | None = None) -> str:
    """SHA-256 over every source file of moopt (path and content), so new modules count too.

    Files under ``exclude`` are left out (the page cache hashes each definition on its own).
    """
    root = Path(package_dir or PACKAGE_DIR)
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*")
                   if p.suffix in SOURCE_SUFFIXES and p.is_file() and "__pycache__" not in p.parts
                   and not (exclude is not None and p.is_relative_to(exclude)))
    for path in files:
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def _table_digest(con, table: str) -> str:
    if not table_exists(con, table):
        return f"{table}:absent"
    rows, total = con.execute(f"SELECT count(*), sum(hash(t)) FROM {table} t").fetchall()[0]
    return f"{table}:{rows}:{total}"


def _library_versions(names: tuple[str, ...] = RESULT_LIBRARIES) -> str:
    import importlib.metadata

    versions = []
    for name in names:
        try:
            versions.append(f"{name}={importlib.metadata.version(name if name != 'ibis' else 'ibis-framework')}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name}=absent")
    return ",".join(versions)


def _engine_key(store: Store, config: RunConfig) -> str:
    """Changes whenever anything that can change the indicator table changes.

    That is: every ingested file (path, size, modification time, run window), the content
    of the input tables not fully described by those files (organisations and their names,
    practice attributes, cost centres, supplied data), every source file of moopt (the
    definitions among them), the libraries that compute, the store's schema version and
    the run's period.
    """
    return _engine_inputs_digest(store, config, with_definitions=True)


def _engine_inputs_digest(store: Store, config: RunConfig, with_definitions: bool) -> str:
    """The engine key (see :func:`_engine_key`), or, without ``with_definitions``, the same
    key with every indicator definition left out (the page cache hashes each on its own)."""
    h = hashlib.sha256(f"{__version__}|{SCHEMA_VERSION}".encode())
    for row in store.con.execute(
            "SELECT file, table_name, file_size, file_mtime, coalesce(run_window, '') FROM ingest_log "
            "ORDER BY file, table_name").fetchall():
        h.update(repr(row).encode())
    for table in CONTENT_KEYED_TABLES:
        h.update(_table_digest(store.con, table).encode())
    if with_definitions:
        h.update(package_source_digest().encode())
        if not DEFINITIONS_DIR.is_relative_to(PACKAGE_DIR):  # covered above when inside the package
            for path in sorted(DEFINITIONS_DIR.glob("*.yml")):
                h.update(path.read_bytes())
    else:
        inside = DEFINITIONS_DIR if DEFINITIONS_DIR.is_relative_to(PACKAGE_DIR) else None
        h.update(b"without definitions" + package_source_digest(exclude=inside).encode())
    h.update(_library_versions().encode())
    h.update(f"{config.period_end}|{config.period_months}".encode())
    h.update(("computed:" + ",".join(i.id for i in run_indicators(config))).encode())  # drafts in or out
    return h.hexdigest()


# England has about 6,300 GP practices; data for fewer than this describe part of it.
NATIONAL_PRACTICES = 6_000


def _results_key(engine_key: str, config: RunConfig) -> str:
    """The engine key plus what the results stage adds: the series level and codes."""
    codes = ",".join(sorted(config.org_codes)) if config.org_codes is not None else "all"
    levels = ",".join(config.page_levels)
    return hashlib.sha256(f"{engine_key}|{config.org_level}|{codes}|{levels}".encode()).hexdigest()


def _stored_facts(con) -> dict:
    if not table_exists(con, "run_facts"):
        return {}
    frame = con.execute("SELECT * FROM run_facts").fetchdf()
    return frame.iloc[0].to_dict() if len(frame) else {}


def resolve_period(config: RunConfig, months: list[str]) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The run's period start and end, from the parameters and the months in the store.

    The one place the period is resolved: the result goes to ``run_facts``, which pages read.
    """
    if not months:
        raise ParameterError("The store holds no prescribing data to compute indicators from.")
    end = months[-1] if config.period_end == "latest" else config.period_end
    if end not in months:
        raise ParameterError(f"period.end (or --period-end) {end} is not in the data, which cover "
                             f"{months[0]} to {months[-1]}.")
    end_ts = pd.Timestamp(end + "-01")
    return end_ts - pd.DateOffset(months=config.period_months - 1), end_ts


def compute_indicators(config: RunConfig, store: Store, synthetic: bool, progress=None) -> dict:
    """The indicator engine, then the national results stage, then the run facts; each cached.

    The engine is rerun when any of its inputs changes (``_engine_key``); the
    results stage also when the run's level or organisations change.
    """
    say = progress or (lambda msg: None)
    con = store.con
    key = _engine_key(store, config)
    results_key = _results_key(key, config)
    stored = _stored_facts(con)
    if stored.get("results_key") == results_key:
        say("indicators and national results are up to date (inputs and definitions unchanged)")
        return json.loads(stored["engine_report"])
    start_ts, end_ts = resolve_period(config, store.months())
    # The engine and the results stage are held to the same DuckDB memory as ingest (spilling to disk).
    with store.memory_limit(config.ingest_memory_limit):
        info = _engine_and_results(config, store, key, stored, start_ts, end_ts, say)
    write_run_facts(con, config, synthetic, start_ts, end_ts, key, results_key, info)
    return info


def _engine_and_results(config: RunConfig, store: Store, key: str, stored: dict, start_ts, end_ts, say) -> dict:
    con = store.con
    indicators = run_indicators(config)  # drafts only when asked for
    backend = ibis.duckdb.from_connection(con)
    if stored.get("engine_key") == key:
        say("indicator table is up to date (inputs and definitions unchanged)")
        info = json.loads(stored["engine_report"])
    else:
        if config.engine_backend == "pyspark":
            from moopt.spark_engine import run_engine_on_spark

            report = run_engine_on_spark(con, indicators, config.spark, config.outputs_dir / "spark",
                                         end_month=end_ts.date(), start_month=start_ts.date(), progress=say)
        else:
            engine = IndicatorEngine(backend, indicators)
            report = engine.run(end_month=end_ts.date(), start_month=start_ts.date(), progress=say)
        overflow = proportion_overflow(backend, indicators)
        if overflow:
            raise ValueError("Percentages above 100% (numerator codes outside the denominator's) for: "
                             + ", ".join(f"{k} ({v} rows)" for k, v in overflow.items()))
        info = {"rows": report.rows, "seconds": round(report.seconds, 1), "indicators": report.indicators,
                "months": report.months,
                "practice_months_without_list_size": report.practice_months_without_list_size}
        if report.practice_months_without_list_size:
            say(f"note: {report.practice_months_without_list_size:,} practice-months had prescribing but no "
                "list size; they are left out of population-based indicators above practice level")
    scope = SeriesScope(config.org_level, tuple(config.org_codes) if config.org_codes is not None else None,
                        levels_above=config.page_levels[:-1])
    info["results"] = compute_results(con, indicators, scope, say)
    return info


def write_run_facts(con, config: RunConfig, synthetic: bool, start_ts: pd.Timestamp, end_ts: pd.Timestamp,
                    engine_key: str, results_key: str, info: dict) -> None:
    """Write the one-row ``run_facts`` table every later stage reads."""
    # How much of England the data cover: pages say so when it is not the whole country.
    practices, sub_icbs = con.execute(
        "SELECT count(DISTINCT p.practice_code), count(DISTINCT o.sub_icb_code) "
        "FROM (SELECT DISTINCT practice_code FROM prescribing) p JOIN organisations o USING (practice_code)"
    ).fetchall()[0]
    has_rolling = con.execute("SELECT count(*) FROM indicator_results WHERE period_type = 'rolling_12m'"
                              ).fetchall()[0][0] > 0
    row = {"period_start": start_ts.date(), "period_end": end_ts.date(),
           "window_start": (start_ts - pd.DateOffset(months=11)).date(), "period_months": config.period_months,
           "org_level": config.org_level, "synthetic": bool(synthetic),
           "practices_with_prescribing": practices, "sub_icbs_with_prescribing": sub_icbs,
           "whole_england": practices >= NATIONAL_PRACTICES, "has_rolling": has_rolling,
           "engine_key": engine_key, "results_key": results_key, "engine_report": json.dumps(info, default=str)}
    columns = TABLES["run_facts"].columns
    con.execute("CREATE OR REPLACE TABLE run_facts ("
                + ", ".join(f"{c.name} {c.type}" for c in columns) + ")")
    con.execute(f"INSERT INTO run_facts VALUES ({', '.join('?' for _ in columns)})",
                [row[c.name] for c in columns])
    con.execute("DROP TABLE IF EXISTS run_info")  # the key-value table of earlier versions
    check_columns(con, "run_facts")


# -- organisations and jobs ---------------------------------------------------------------------------

def organisations_for_run(store: Store, config: RunConfig) -> list[dict]:
    """The organisations that get pages, top level first, each with its parent and ancestors.

    The run's own level (``organisations.level``) is chosen by ``organisations.codes``; with
    ``levels_above`` (the default) the levels above it, up to region, add the organisations that
    contain the chosen ones, so that every page has a page above it (its breadcrumbs) and the pages
    above list the ones below. Unknown requested codes are an error.
    """
    level = config.org_level
    if level == GROUP_LEVEL:
        return _groups_for_run(store, config)
    code_col, name_col = ORG_LEVEL_COLUMNS[level]
    above = list(parent_levels(level))  # nearest first
    select = [f"{code_col} AS code", f"any_value({name_col}) AS name"]
    for upper in above:
        upper_code, upper_name = ORG_LEVEL_COLUMNS[upper]
        select += [f"any_value({upper_code}) AS {upper}_code_", f"any_value({upper_name}) AS {upper}_name_"]
    frame = store.con.execute(
        f"SELECT {', '.join(select)}, count(*) FILTER (WHERE status IN ('C', 'D')) AS n_closed "
        f"FROM organisations GROUP BY {code_col} ORDER BY {code_col}").fetchdf()
    known = set(frame["code"])
    if config.org_codes is not None:
        unknown = [c for c in config.org_codes if c not in known]
        if unknown:
            names = dict(zip(frame["code"], frame["name"]))
            examples = ", ".join(sorted(known)[:8])
            raise ParameterError(
                f"Unknown {ORG_LEVEL_LABELS[level].lower()} code(s): "
                + "; ".join(_unknown_code_text(code, names) for code in unknown)
                + f" (asked for in organisations.codes or --orgs). The data have {len(known)} at this "
                f"level, e.g. {examples}.")
        frame = frame[frame["code"].isin(config.org_codes)]
    elif level == "practice":
        # Practices closed (or dormant) per ODS keep their history in every level above, but get
        # no page of their own in a run of all practices; ask for one by code to see its history.
        frame = frame[frame["n_closed"] == 0]
    frame = frame.where(frame.notna(), None)

    def ancestors(row, levels: list[str]) -> list[dict]:
        # Top (region) first, as breadcrumbs read; a level the data leave empty is skipped.
        return [{"level": upper, "code": row[f"{upper}_code_"], "name": row[f"{upper}_name_"]}
                for upper in reversed(levels) if row[f"{upper}_code_"] is not None]

    def record(code, name, org_level: str, row, levels: list[str]) -> dict:
        up = ancestors(row, levels)
        parent = up[-1] if up else None
        region = next((a for a in up if a["level"] == "region"), None)
        return {"code": code, "name": name, "level": org_level,
                "parent_code": parent["code"] if parent else None,
                "parent_name": parent["name"] if parent else None,
                "region_code": region["code"] if region else (code if org_level == "region" else None),
                "region_name": region["name"] if region else (name if org_level == "region" else None),
                "ancestors": up}

    records = [record(row["code"], row["name"], level, row, above) for row in frame.to_dict("records")]
    if config.levels_above:
        rows = frame.to_dict("records")
        for i, upper in enumerate(above):
            seen: dict[str, dict] = {}
            for row in rows:
                code = row[f"{upper}_code_"]
                if code is not None and code not in seen:
                    seen[code] = record(code, row[f"{upper}_name_"], upper, row, above[i + 1:])
            records = [seen[c] for c in sorted(seen)] + records
    return records


def _groups_for_run(store: Store, config: RunConfig) -> list[dict]:
    """The run's own groups (``practice_groups``); like the other levels, unknown codes are an error."""
    frame = store.con.execute(
        "SELECT group_code AS code, any_value(group_name) AS name, NULL AS parent_code, NULL AS parent_name, "
        "NULL AS region_code, NULL AS region_name FROM practice_groups GROUP BY group_code ORDER BY group_code"
    ).fetchdf()
    if frame.empty:
        raise ParameterError("organisations.level is group, but the groupings file gave no groups.")
    if config.org_codes is not None:
        names = dict(zip(frame["code"], frame["name"]))
        unknown = [c for c in config.org_codes if c not in names]
        if unknown:
            raise ParameterError("Unknown group code(s): " + "; ".join(_unknown_code_text(c, names) for c in unknown)
                                 + f" (asked for in organisations.codes or --orgs). The groupings file has "
                                 f"{len(names)} groups, e.g. {', '.join(sorted(names)[:8])}.")
        frame = frame[frame["code"].isin(config.org_codes)]
    frame["level"] = GROUP_LEVEL
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _unknown_code_text(code: str, names: dict[str, str | None]) -> str:
    """``code``, with the known codes (or names) closest to it, for an error message."""
    by_code = difflib.get_close_matches(code.upper(), list(names), n=3, cutoff=0.6)
    by_name = {str(name).upper(): c for c, name in names.items() if name}
    by_name_hits = [by_name[n] for n in difflib.get_close_matches(code.upper(), list(by_name), n=2, cutoff=0.6)]
    close = list(dict.fromkeys(by_code + by_name_hits))
    if not close:
        return code
    return f"{code} (did you mean {', '.join(f'{c} {names[c]}' if names.get(c) else c for c in close)}?)"


def themes_for_run(config: RunConfig) -> list[Theme]:
    themes = built_themes()
    if config.themes is None:
        return themes
    known = {t.id: t for t in themes}
    unknown = [t for t in config.themes if t not in known]
    if unknown:
        hints = []
        for theme in unknown:
            close = difflib.get_close_matches(theme, list(known), n=2)
            hints.append(f"{theme} (did you mean {' or '.join(close)}?)" if close else theme)
        raise ParameterError(f"Unknown or unbuilt theme(s) in themes (or --themes): {', '.join(hints)}. "
                             f"Built themes: {', '.join(known)}.")
    return [known[t] for t in config.themes]


def notebook_jobs(config: RunConfig, orgs: list[dict], themes: list[Theme]) -> list[NotebookJob]:
    out = config.outputs_dir
    nb_dir = config.project_dir / "notebooks"
    common = {"store_path": str(config.store_path), "outputs_dir": str(out), "period_end": "latest"}
    jobs = [NotebookJob("england", ENGLAND_CODE, "overview", str(nb_dir / "overview.ipynb"),
                        str(out / "notebooks" / "england" / ENGLAND_CODE / "overview.ipynb"),
                        {**common, "comparison_level": config.org_level})]
    for org in orgs:
        level = org.get("level", config.org_level)
        jobs.append(NotebookJob(
            level, org["code"], "summary", str(nb_dir / "summary.ipynb"),
            str(out / "notebooks" / level / org["code"] / "summary.ipynb"),
            {**common, "org_level": level, "org_code": org["code"],
             "themes": [t.id for t in themes]}))
        for theme in themes:
            jobs.append(NotebookJob(
                level, org["code"], theme.id, str(nb_dir / f"{theme.notebook}.ipynb"),
                str(out / "notebooks" / level / org["code"] / f"{theme.id}.ipynb"),
                {**common, "org_level": level, "org_code": org["code"], "theme": theme.id}))
    missing = sorted({j.template for j in jobs if not Path(j.template).exists()})
    if missing:
        raise ParameterError(f"Notebook template(s) not found: {', '.join(missing)}.")
    return jobs


# -- the build cache: which pages must be re-run --------------------------------------------------------

# Libraries whose upgrade can change a page (its tables, charts and text) besides its results.
PAGE_LIBRARIES = (*RESULT_LIBRARIES, "altair", "vl-convert-python")
# run_facts columns that are not facts a page shows: keys of other caches, the engine's timings.
_NOT_PAGE_FACTS = ("engine_key", "results_key", "engine_report")


@dataclass(frozen=True)
class PageCacheInputs:
    """What every page key is made of, read once per build while the store is open.

    Attributes
    ----------
    shared : str
        Hash of what every page depends on: the inputs of the indicator and results stages
        except the definitions (the files ingested, the content of the input tables, moopt's
        source without the definitions, the libraries, the period, level and organisations),
        the libraries that draw, and the run facts pages show.
    indicators : dict
        Per indicator id: hash of its definition file's bytes.

    Notes
    -----
    A page's results are keyed by what they are computed from, not by the stored values
    (``results_digests``). The values are the same on every rerun of unchanged inputs since
    the engine sums exactly (:func:`moopt.indicators.engine.exact_sum`), so either would do.
    """

    shared: str
    indicators: dict[str, str]


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def page_chart_mode(config: RunConfig) -> str:
    """How pages publish charts in this run (see :func:`moopt.report.chart_mode`)."""
    return "site+svg" if config.static_charts else "site"


@contextmanager
def _kernel_environment(**variables: str):
    """Set environment variables for the notebook kernels started inside the block, then restore."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def read_page_cache_inputs(store: Store, config: RunConfig) -> PageCacheInputs:
    """Read, from the store and the package, what page keys are made of (see :func:`assign_cache_keys`).

    The definitions are hashed one by one rather than through the package digest, so that
    editing one changes only the keys of the pages that show it.
    """
    facts = {k: v for k, v in _stored_facts(store.con).items() if k not in _NOT_PAGE_FACTS}
    shared = hashlib.sha256(_canonical({
        "results_inputs": _results_key(_engine_inputs_digest(store, config, with_definitions=False), config),
        "libraries": _library_versions(PAGE_LIBRARIES),
        "run_facts": facts,
        "chart_mode": page_chart_mode(config),
    }).encode()).hexdigest()
    indicators = {}
    for indicator in load_indicators():
        definition = DEFINITIONS_DIR / f"{indicator.id}.yml"
        text = definition.read_bytes() if definition.is_file() else _canonical(vars(indicator)).encode()
        indicators[indicator.id] = hashlib.sha256(text).hexdigest()
    return PageCacheInputs(shared, indicators)


def assign_cache_keys(jobs: list[NotebookJob], inputs: PageCacheInputs, orgs: list[dict]) -> None:
    """Give each job its cache key: what its page shows and how it is made, hashed.

    A key covers the notebook template's bytes, the job's parameters, ``inputs.shared``
    (the data, source, libraries and run facts), the organisation as the data name it, and
    the definitions of the indicators the page shows: a theme page its theme's, the summary
    and the England overview every one. The runner reuses a notebook whose key is unchanged.
    """
    by_code = {(org.get("level"), org["code"]): org for org in orgs}
    every = sorted(inputs.indicators)
    by_theme: dict[str, list[str]] = {}
    for indicator in load_indicators():
        by_theme.setdefault(indicator.theme, []).append(indicator.id)
    templates: dict[str, str] = {}
    for job in jobs:
        if job.template not in templates:
            templates[job.template] = hashlib.sha256(Path(job.template).read_bytes()).hexdigest()
        shown = by_theme.get(job.theme, []) if job.theme not in ("summary", "overview") else every
        organisation = by_code.get((job.org_level, job.org_code), {"code": job.org_code, "level": job.org_level})
        job.cache_key = hashlib.sha256(_canonical({
            "template": templates[job.template],
            "parameters": job.parameters,
            "shared": inputs.shared,
            "organisation": organisation,
            "indicators": {i: inputs.indicators[i] for i in shown},
        }).encode()).hexdigest()


# -- the build -------------------------------------------------------------------------------------------

def _run_pages(jobs: list[NotebookJob], config: RunConfig, say, force: bool,
               preview: PreviewRequest | None) -> list[NotebookResult]:
    """Run the notebooks; in a preview only those of the pages that show what is previewed."""
    if preview is None:
        return run_notebooks(jobs, config.outputs_dir, config.workers, config.project_dir, say,
                             mode=config.runner, force=force, scheduler=config.scheduler)
    to_run, kept = split_preview_jobs(jobs, preview, config.outputs_dir)
    say(f"preview of {preview.describe()}: {len(to_run)} page(s) that show it (or that the last build did not "
        f"leave) are run; {len(kept)} other page(s) are kept from the last build")
    ran = run_notebooks([jobs[i] for i in to_run], config.outputs_dir, config.workers, config.project_dir,
                        say, mode=config.runner, force=force, scheduler=config.scheduler)
    results = dict(kept)
    results.update(zip(to_run, ran))
    return [results[i] for i in range(len(jobs))]


def check_run_request(config: RunConfig) -> list[Theme]:
    """Check what can be checked before any data is read; return the run's themes.

    Themes come from the definitions and the level from a fixed list, so a mistyped one
    fails at once rather than after ingest and indicators.
    """
    if config.org_level not in ORG_LEVEL_COLUMNS or config.org_level == "england":
        raise ParameterError(f"organisations.level {config.org_level!r} is not a level pages can be built for. "
                             f"Use one of: {', '.join(l for l in ORG_LEVEL_COLUMNS if l != 'england')}.")
    return themes_for_run(config)


def check_period_end(store: Store, config: RunConfig) -> None:
    """Stop, before indicators are computed, when period.end is a month the data do not cover."""
    resolve_period(config, store.months())


def build(config: RunConfig, progress=None, render_site: bool = True, force: bool = False,
          preview: PreviewRequest | None = None) -> BuildResult:
    """Run everything; return what happened. Notebook failures are collected, not raised.

    Parameters
    ----------
    config : RunConfig
        The run.
    progress : callable, optional
        Called with one-line progress messages.
    render_site : bool
        Publish the site (``outputs/site``) at the end.
    force : bool
        Run every notebook, even those the build cache would reuse.
    preview : PreviewRequest, optional
        Re-run only the pages that show these indicators or themes (see :mod:`moopt.preview`);
        every other page is kept from the last build. Made by :func:`moopt.preview.preview_request`.

    Returns
    -------
    BuildResult
        Ingest reports, notebook results, the site built (None when not published), timings.

    Raises
    ------
    moopt.build_lock.OutputsBusyError
        When another moopt command is writing the outputs folder.
    ParameterError
        For a theme, level, period end or organisation code the run cannot use; each is
        checked as soon as it can be (themes and level before any data is read, codes and
        period end right after ingest, before indicators).

    Notes
    -----
    The published site is replaced only by a build whose notebook stage ran to its end
    and in which at least one notebook succeeded. A build stopped part-way (killed,
    interrupted, a crash) leaves the previous site, and marks the outputs folder
    unfinished so that ``moopt site`` will not publish its mix of notebooks either.

    A notebook is re-run only when something its page depends on changed (see
    :func:`assign_cache_keys`); the others are reused from the last build.
    """
    say = progress or (lambda msg: None)
    themes = check_run_request(config)
    with outputs_lock(config.outputs_dir, "build", say):
        removed = remove_interrupted_notebooks(config.outputs_dir / "notebooks")
        if removed:
            say(f"removed {removed} unfinished notebook(s) left by an interrupted run")
        remove_interrupted_site_folders(config.outputs_dir, say)
        return _build_locked(config, themes, say, render_site, force, preview)


def _build_locked(config: RunConfig, themes: list[Theme], say, render_site: bool,
                  force: bool = False, preview: PreviewRequest | None = None) -> BuildResult:
    result = BuildResult()
    t0 = time.perf_counter()

    say("1/5 data")
    files = ensure_data(config, say)
    result.seconds["data"] = time.perf_counter() - t0

    say("2/5 store: validating and ingesting files")
    t = time.perf_counter()
    reset_store_if_data_changed(config.store_path, files, say)
    with Store(config.store_path) as store:
        result.ingest = ingest_run(store, config, files, say)
        groupings = load_groupings(store, config.groupings_file, say)  # the run's own groups, if any
        if groupings is not None:
            result.ingest.append(groupings)
        read = sum(r.rows_read for r in result.ingest)
        accepted = sum(r.rows_accepted for r in result.ingest)
        rejected = sum(r.rows_rejected for r in result.ingest)
        if read:
            say(f"ingest: {read:,} rows read = {accepted:,} accepted + {rejected:,} rejected "
                f"(rejected rows and reasons: {store.rejects_dir})")
        result.seconds["ingest"] = time.perf_counter() - t
        # The organisations are known now: a mistyped code or month stops here, not after the indicators.
        orgs = organisations_for_run(store, config)
        check_period_end(store, config)

        left_out = left_out_drafts(config)
        say("3/5 indicators: computing every indicator for every organisation level"
            + (f" (draft {', '.join(left_out)} left out: --drafts or include_drafts: true computes drafts)"
               if left_out else ""))
        t = time.perf_counter()
        engine_info = compute_indicators(config, store, files.synthetic, say)
        result.seconds["indicators"] = time.perf_counter() - t
        cache_inputs = read_page_cache_inputs(store, config)
    jobs = notebook_jobs(config, orgs, themes)
    assign_cache_keys(jobs, cache_inputs, orgs)

    workers = min(config.workers, len(jobs))
    per_level = ", ".join(f"{sum(o.get('level') == lv for o in orgs)} {ORG_LEVEL_PLURALS.get(lv, lv)}"
                          for lv in config.page_levels)
    say(f"4/5 notebooks: {len(jobs)} in all ({per_level}; each {len(themes)} themes + summary; "
        f"+ England overview), those not reusable run on {workers} workers, {config.runner} kernels")
    t = time.perf_counter()
    # From here the notebooks on disk stop matching the last manifest until the new one is written.
    mark_unfinished(config.outputs_dir)
    with _kernel_environment(MOOPT_CHART_MODE=page_chart_mode(config)):
        result.notebooks = _run_pages(jobs, config, say, force, preview)
    result.seconds["notebooks"] = time.perf_counter() - t

    manifest = {
        "title": config.title,
        "synthetic": files.synthetic,
        "data_notice": (
            "SYNTHETIC DATA: every organisation name, code and figure on this site is generated by "
            "moopt's synthetic data generator. None of it describes real NHS organisations."
            if files.synthetic else None),
        "data_description": files.description,
        "period": {"start": engine_info["months"][0] if engine_info.get("months") else None,
                   "end": engine_info["months"][-1] if engine_info.get("months") else None},
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "moopt_version": __version__,
        "parameters": config.raw,
        "org_level": config.org_level,
        "organisations": orgs,
        "themes": [{"id": "summary", "title": "Summary",
                    "description": "Every indicator for one organisation at a glance: a spine chart against "
                                   "England and the range across organisations, with links to the theme pages.",
                    "indicators": []}] + [{"id": th.id, "title": th.title, "description": th.description,
                    "indicators": [{"id": i.id, "title": i.title, "short_title": i.short_title,
                                    "improvement_direction": i.improvement_direction, "unit": i.unit,
                                    "value_decimals": i.value_decimals}
                                   for i in run_indicators(config) if i.theme == th.id]}
                   for th in themes],
        "notebooks": [r.to_dict() for r in result.notebooks],
        "drafts": [i.id for i in run_indicators(config) if i.status == "draft"],
        "preview": None if preview is None else {"indicators": list(preview.indicators),
                                                 "themes": list(preview.themes)},
        "ingest": [vars(r) for r in result.ingest],
        "engine": engine_info,
        "extra_pages": write_methodology(config.outputs_dir),
    }
    manifest.update(run_provenance(config, files, result))  # inputs, commit, row counts, timings
    write_json_atomic(config.outputs_dir / "run_manifest.json", manifest)
    mark_finished(config.outputs_dir)

    if render_site and result.notebooks and len(result.failures) == len(result.notebooks):
        say(f"5/5 site: NOT replaced: every one of the {len(result.notebooks)} notebooks failed, so the "
            f"published site in {config.outputs_dir / 'site'} is kept (the failures are listed below "
            "and in run_manifest.json; `moopt site` publishes them anyway)")
    elif render_site:
        say("5/5 site: writing the Quarto project and rendering it")
        t = time.perf_counter()
        from moopt.site import build_site

        result.site = build_site(config.outputs_dir, manifest, renderer=config.renderer,
                                 base_config=config.project_dir / "_quarto.yml", progress=say)
        result.seconds["site"] = time.perf_counter() - t
    result.seconds["total"] = time.perf_counter() - t0
    return result
