"""moopt from Python: the command line's build, and indicator values as a DataFrame.

Two functions, reachable without importing this module::

    import moopt
    run = moopt.build("parameters/small-example.yml", themes="antimicrobials", site=False)
    run.indicators(["AMR01"])                      # the built values and statistics

    from moopt.indicators import calculate
    calculate(["AMR01", "AMR02"], level="icb", store="outputs/store/moopt.duckdb")
    calculate(["AMR01"], level="icb", source="engine")   # recomputed from the definitions as they are now

:func:`build` runs exactly what ``moopt build`` runs (:func:`moopt.pipeline.build`);
:func:`calculate` reads the results of a build (:class:`moopt.tables.ResultsReader`'s
store), or runs :class:`moopt.indicators.engine.IndicatorEngine` on the input tables of a
built store, so that an edited definition can be previewed without a build. See
``docs/python-api.md``.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pandas as pd

# The keyword arguments of build() that mirror `moopt build` options (see moopt.cli._overrides).
BUILD_OPTIONS = (
    "orgs",
    "level",
    "no_levels_above",
    "themes",
    "period_end",
    "workers",
    "runner",
    "renderer",
    "outputs",
    "synthetic_scale",
)
DEFAULT_STORE = Path("outputs") / "store" / "moopt.duckdb"
# Input tables the engine reads from a store (the last two are optional).
ENGINE_INPUT_TABLES = (
    "prescribing",
    "list_size",
    "organisations",
    "practices_without_list_size",
    "supplied",
)
SOURCES = ("results", "engine")
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _printer(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class BuiltRun:
    """What :func:`build` returns: the run's settings and what the build did.

    Attributes
    ----------
    config : moopt.config.RunConfig
        The run as resolved (paths absolute).
    result : moopt.pipeline.BuildResult
        Ingest reports, notebook results, the site (None without one) and seconds per stage.
    """

    config: object
    result: object

    @property
    def outputs_dir(self) -> Path:
        """The outputs folder: notebooks, CSV downloads, site, store, manifest."""
        return Path(self.config.outputs_dir)

    @property
    def store_path(self) -> Path:
        """The DuckDB store the results are in (see ``docs/tables.md``)."""
        return Path(self.config.store_path)

    @property
    def manifest(self) -> dict:
        """``run_manifest.json`` of this build (see ``docs/manifest.md``)."""
        return json.loads((self.outputs_dir / "run_manifest.json").read_text(encoding="utf-8"))

    @property
    def failures(self) -> list:
        """The notebooks that failed (each with organisation, theme and error)."""
        return self.result.failures

    @property
    def ok(self) -> bool:
        """True when every notebook ran (or was reused) without error."""
        return not self.result.failures

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds per stage."""
        return dict(self.result.seconds)

    def indicators(
        self, indicator_ids: str | list[str] | None = None, level: str | None = None, **options
    ) -> pd.DataFrame:
        """Indicator values of this build: :func:`calculate` on its store, at its level by default."""
        return calculate(
            indicator_ids, level=level or self.config.org_level, store=self.store_path, **options
        )


def build(
    params: str | Path | dict | None = None,
    *,
    project_dir: str | Path | None = None,
    site: bool = True,
    force: bool = False,
    progress: bool | Callable[[str], None] = True,
    **overrides,
) -> BuiltRun:
    """Build, as ``moopt build`` does: data, store, indicators, notebooks, site.

    Parameters
    ----------
    params : str, Path or dict, optional
        A run file (YAML), as ``--params``; or its content as a dict, applied over the
        project's ``parameters/default.yml`` (or the built-in defaults); default: the
        project's ``parameters/default.yml``.
    project_dir : str or Path, optional
        The project folder (``notebooks/``, ``parameters/``); relative paths in the run
        are read from it. Default: the current folder, as for the command line.
    site : bool
        Publish the site at the end (``--no-site`` is ``site=False``).
    force : bool
        Run every notebook, even those the build cache would reuse (``--force``).
    progress : bool or callable
        True prints progress lines as the command line does; False is quiet; a callable
        is called with each line.
    **overrides
        The command line's options: ``orgs``, ``level``, ``no_levels_above`` (True: pages for
        the level only, not the ICBs and regions above it), ``themes`` (a list, or a
        comma-separated string), ``period_end`` ("YYYY-MM"), ``workers``, ``runner``,
        ``renderer``, ``outputs``, ``synthetic_scale``. They win over ``params``.

    Returns
    -------
    BuiltRun
        The resolved run and what the build did. Notebook failures are collected there
        (``run.failures``), not raised, as the command line lists them.

    Raises
    ------
    TypeError
        For a keyword that is not one of the command line's options.
    moopt.config.ParameterError
        For parameters the run cannot use (the message names the file and value).
    """
    from moopt.cli import _overrides
    from moopt.config import KNOWN_SECTIONS, ParameterError, load_config
    from moopt.pipeline import build as run_build

    unknown = sorted(set(overrides) - set(BUILD_OPTIONS))
    if unknown:
        raise TypeError(
            f"build() got unknown option(s) {', '.join(unknown)}; "
            f"the options are {', '.join(BUILD_OPTIONS)}."
        )
    from_options = _overrides(SimpleNamespace(**overrides))
    params_file = None
    if isinstance(params, dict):
        extra = sorted(set(params) - KNOWN_SECTIONS)
        if extra:
            raise ParameterError(
                f"params: unknown parameter(s) {', '.join(map(str, extra))}. "
                f"Known: {', '.join(sorted(KNOWN_SECTIONS))}."
            )
        from_options = _merged(params, from_options)
    elif params is not None:
        params_file = Path(params)
        if project_dir is not None and not params_file.is_absolute():
            params_file = Path(project_dir) / params_file
    config = load_config(params_file, project_dir=project_dir, overrides=from_options)
    say = _printer if progress is True else (progress or None)
    result = run_build(config, progress=say, render_site=site, force=force)
    return BuiltRun(config, result)


def _merged(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = (
            _merged(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def calculate(
    indicator_ids: str | list[str] | None = None,
    level: str = "sub_icb",
    store: str | Path | BuiltRun = DEFAULT_STORE,
    period_end: str | date | None = None,
    *,
    period_type: str | None = None,
    org_codes: str | list[str] | None = None,
    source: str = "results",
    definitions: str | Path | None = None,
) -> pd.DataFrame:
    """Indicator values at one organisation level, as a DataFrame.

    Parameters
    ----------
    indicator_ids : str or list of str, optional
        Indicator ids (``"AMR01"`` or ``["AMR01", "SAF02"]``); default every indicator
        the store holds (``source="results"``) or every definition (``"engine"``).
    level : str
        ``practice``, ``pcn``, ``sub_icb``, ``icb``, ``region`` or ``england``.
    store : str, Path or BuiltRun
        A built store (default ``outputs/store/moopt.duckdb`` under the current folder),
        or what :func:`build` returned.
    period_end : str or date, optional
        The last month to include ("YYYY-MM"); default every month.
    period_type : str, optional
        Only ``month``, ``rolling_12m``, ``quarter`` or ``year`` rows; default all.
    org_codes : str or list of str, optional
        Only these organisations; default all at the level.
    source : str
        ``"results"`` reads the build's ``indicator_results``: values with every
        statistic (intervals, funnel, verdict, peers, savings; columns in
        ``docs/tables.md``). ``"engine"`` recomputes the values from the store's input
        tables with the definitions as they are on disk now (an edited definition is
        read afresh), giving the columns of ``indicator_values`` and no statistics.
    definitions : str or Path, optional
        With ``source="engine"``: a folder of definition files to use instead of
        moopt's own (``src/moopt/indicators/definitions``).

    Returns
    -------
    pandas.DataFrame
        One row per indicator, organisation, period type and period, sorted by them.

    Raises
    ------
    FileNotFoundError
        When there is no store, or (``"results"``) it holds no build's results.
    ValueError
        For an unknown level, source, month, or an indicator the store or the
        definitions do not have (with the ones they do).
    """
    from moopt.orgs import ORG_LEVELS

    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}.")
    if level not in ORG_LEVELS:
        raise ValueError(f"level must be one of {', '.join(ORG_LEVELS)}, not {level!r}.")
    ids = _as_list(indicator_ids)
    codes = _as_list(org_codes)
    end = _month_end(period_end)
    store_path = Path(store.store_path if isinstance(store, BuiltRun) else store)
    if not store_path.is_file():
        raise FileNotFoundError(
            f"No store at {store_path.resolve()}: build first (`moopt build` or "
            "moopt.build()), or pass store= the path of outputs/store/moopt.duckdb."
        )
    if source == "results":
        frame = _read_results(store_path, ids, level)
    else:
        frame = _run_engine(store_path, ids, definitions, end)
        frame = frame[frame["org_level"] == level]
    if end is not None:
        frame = frame[pd.to_datetime(frame["period"]) <= pd.Timestamp(end)]
    if period_type is not None:
        frame = frame[frame["period_type"] == period_type]
    if codes is not None:
        frame = frame[frame["org_code"].isin(codes)]
    keys = ["indicator_id", "org_code", "period_type", "period"]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def _as_list(value) -> list[str] | None:
    if value is None:
        return None
    items = (
        [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    )
    return [v for v in items if v]


def _month_end(period_end) -> date | None:
    """The first day of the last month to include (periods are stored as their last month's first day)."""
    if period_end is None or period_end == "latest":
        return None
    if isinstance(period_end, date):
        return period_end.replace(day=1)
    if not MONTH.match(str(period_end)):
        raise ValueError(
            f"period_end must be a month like 2026-06 (or a date), not {period_end!r}."
        )
    return date.fromisoformat(f"{period_end}-01")


def _read_results(store_path: Path, ids: list[str] | None, level: str) -> pd.DataFrame:
    import duckdb

    from moopt.tables import ResultsReader

    con = duckdb.connect(str(store_path), read_only=True)
    try:
        reader = ResultsReader(con)
        held = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT indicator_id FROM indicator_results ORDER BY 1"
            ).fetchall()
        ]
        missing = [i for i in ids or [] if i not in held]
        if missing:
            raise ValueError(
                f"The store {store_path} holds no results for {', '.join(missing)} (it was "
                f"built with {', '.join(held)}). Build with them, or use source='engine'."
            )
        where, params = "org_level = ?", [level]
        if ids is not None:
            where += f" AND indicator_id IN ({', '.join('?' for _ in ids)})"
            params += ids
        return reader.frame(f"SELECT * FROM indicator_results WHERE {where}", params)
    finally:
        con.close()


def _load_definitions(ids: list[str] | None, folder: str | Path | None) -> list:
    """Definitions read from disk now (not the cached ones): an edit since import counts."""
    from moopt.indicators.definitions import DEFINITIONS_DIR, load_definition_file

    folder = Path(folder) if folder is not None else DEFINITIONS_DIR
    available = sorted(p.stem for p in folder.glob("*.yml"))
    wanted = ids if ids is not None else available
    missing = [i for i in wanted if i not in available]
    if missing:
        raise ValueError(
            f"No definition for {', '.join(missing)} in {folder} (it has {', '.join(available)})."
        )
    return [load_definition_file(folder / f"{i}.yml") for i in wanted]


def _run_engine(
    store_path: Path, ids: list[str] | None, definitions, end: date | None
) -> pd.DataFrame:
    """The engine over a built store's input tables, in memory; the store is only read."""
    import duckdb
    import ibis

    from moopt.indicators.engine import RESULT_TABLE, IndicatorEngine

    indicators = _load_definitions(ids, definitions)
    con = duckdb.connect()  # in memory: the engine's tables never touch the store
    with tempfile.TemporaryDirectory(prefix="moopt-calculate-") as spill:
        try:
            con.execute(f"SET temp_directory = '{spill}'")
            con.execute(
                f"ATTACH '{str(store_path).replace(chr(39), chr(39) * 2)}' AS built (READ_ONLY)"
            )
            held = {
                name
                for (name,) in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = 'built'"
                ).fetchall()
            }
            if not {"prescribing", "list_size", "organisations"} <= held:
                raise FileNotFoundError(
                    f"The store {store_path} holds no ingested data (prescribing, list sizes "
                    "and organisations): build or `moopt ingest` first."
                )
            for table in ENGINE_INPUT_TABLES:
                if table in held:
                    con.execute(f"CREATE VIEW {table} AS SELECT * FROM built.main.{table}")
            backend = ibis.duckdb.from_connection(con)
            IndicatorEngine(backend, indicators).run(end_month=end)
            return con.execute(f"SELECT * FROM {RESULT_TABLE}").fetchdf()
        finally:
            con.close()
