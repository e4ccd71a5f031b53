"""Run parameters: the control panel of a moopt run.

A run is described by a YAML file under ``parameters/`` (``default.yml`` is
the default run). This module loads it, applies command-line overrides,
validates every value with a message a user can act on, and resolves paths
relative to the project folder.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moopt.orgs import GROUP_LEVEL, ORG_LEVELS, check_safe_code, parent_levels

MONTH_PATTERN = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
THEME_PATTERN = re.compile(r"^[a-z0-9_]+$")
MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.I)  # as DuckDB takes them

DEFAULTS: dict[str, Any] = {
    "title": "Medicines optimisation dashboard",
    "data": {
        "source": "synthetic",
        # None: use the synthetic set already in outputs/data/synthetic (e.g. made by
        # `moopt synth --scale small`), else generate the national set.
        "synthetic_scale": None,
        "synthetic_seed": 42,
        "synthetic_end_month": "2026-09",
        "synthetic_months": 24,
        "epd": [],
        "list_sizes": [],
        "organisations": None,
        "practice_attributes": None,
        "supplied": [],
        "reference": [],
        "max_reject_share": 0.01,
        # warn when a prescribing month has this share fewer rows than the month before it
        "month_drop_warning_share": 0.5,
        # DuckDB's memory while ingesting; it spills to disk beyond this (null: DuckDB's default)
        "ingest_memory_limit": "2GB",
    },
    "period": {"end": "latest", "months": 24},
    "organisations": {"level": "sub_icb", "codes": "all", "levels_above": True},
    "themes": "all",
    "outputs": "outputs",
    "workers": 2,
    "renderer": "auto",
    "runner": "warm",
    # also write a static SVG of every chart (through vl-convert), shown where JavaScript is off
    "static_charts": False,
    # compute and show indicators whose definition has status: draft (else only when named by --indicator)
    "include_drafts": False,
    # where the indicator engine runs: duckdb (the store itself) or pyspark (see moopt.spark_engine)
    "engine": {"backend": "duckdb", "spark": None},
    # a Dask scheduler address (tcp://host:8786): notebooks run on that cluster (moopt.dask_fanout)
    "scheduler": None,
}

KNOWN_SECTIONS = set(DEFAULTS)
# More notebook workers than this per CPU core only compete for memory (each runs a kernel).
MAX_WORKERS_PER_CORE = 4


class ParameterError(ValueError):
    """A run parameter is missing, malformed or inconsistent."""


@dataclass
class RunConfig:
    """Validated run parameters with paths resolved against ``project_dir``."""

    project_dir: Path
    title: str
    data_source: str
    synthetic_scale: str | None
    synthetic_seed: int
    synthetic_end_month: str
    synthetic_months: int
    epd_files: list[str]
    list_size_files: list[str]
    organisations_file: str | dict | None
    practice_attributes_file: str | None
    supplied_files: list[str]
    max_reject_share: float
    period_end: str
    period_months: int
    org_level: str
    org_codes: list[str] | None
    themes: list[str] | None
    outputs_dir: Path
    workers: int
    renderer: str
    runner: str
    raw: dict[str, Any] = field(default_factory=dict)
    params_file: Path | None = None
    reference_files: list[str] = field(default_factory=list)
    ingest_memory_limit: str | None = "2GB"
    month_drop_warning_share: float = 0.5
    static_charts: bool = False
    include_drafts: bool = False
    # Draft indicators computed in this run although include_drafts is off (named by --indicator).
    named_drafts: tuple[str, ...] = ()
    # CSV of practice_code, group_code, group_name: the run's own groups (organisations.groupings).
    groupings_file: str | None = None
    engine_backend: str = "duckdb"
    spark: Any = None  # moopt.spark_engine.SparkSettings when engine_backend is pyspark
    scheduler: str | None = None
    # Also build the pages of every level above org_level (up to region) for the parents of the
    # run's organisations, so that a reader can go up and down the hierarchy.
    levels_above: bool = True

    @property
    def page_levels(self) -> tuple[str, ...]:
        """The levels that get organisation pages, from the top (region) down to ``org_level``."""
        if self.org_level == GROUP_LEVEL or not self.levels_above:
            return (self.org_level,)
        return (*reversed(parent_levels(self.org_level)), self.org_level)

    @property
    def data_dir(self) -> Path:
        return self.outputs_dir / "data"

    @property
    def synthetic_dir(self) -> Path:
        return self.data_dir / "synthetic"

    @property
    def store_path(self) -> Path:
        return self.outputs_dir / "store" / "moopt.duckdb"


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _as_list(value: Any, what: str) -> list[str] | None:
    """``"all"``/None -> None (meaning everything); a string or list -> list of strings."""
    if value is None or value == "all":
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ParameterError(f"{what} must be 'all' or a list of codes, not {value!r}.")
    if not value:
        raise ParameterError(f"{what} is an empty list: use 'all' or name at least one.")
    return value


def load_config(
    params_file: str | Path | None = None,
    project_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Load, merge and validate run parameters.

    Parameters
    ----------
    params_file : path, optional
        YAML run file. Defaults to ``parameters/default.yml`` in the project
        folder when that exists, else the built-in defaults.
    project_dir : path, optional
        Folder that relative paths are resolved against; default the current
        working directory.
    overrides : dict, optional
        Values from the command line, in the same nested shape as the file
        (e.g. ``{"organisations": {"codes": ["00L"]}}``); they win.

    Returns
    -------
    RunConfig

    Raises
    ------
    ParameterError
        With a message naming the file and the parameter at fault.
    """
    project = Path(project_dir or Path.cwd()).resolve()
    source = "built-in defaults"
    from_file: dict[str, Any] = {}
    if params_file is None and (project / "parameters" / "default.yml").exists():
        params_file = project / "parameters" / "default.yml"
    if params_file is not None:
        params_path = Path(params_file)
        if not params_path.is_absolute():
            params_path = (Path.cwd() / params_path).resolve()
        if not params_path.exists():
            raise ParameterError(f"Parameter file {params_path} does not exist.")
        source = str(params_path)
        try:
            from_file = yaml.safe_load(params_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ParameterError(f"{source} is not valid YAML: {exc}") from exc
        if not isinstance(from_file, dict):
            raise ParameterError(f"{source} must hold a mapping of parameters, not {type(from_file).__name__}.")
        unknown = set(from_file) - KNOWN_SECTIONS
        if unknown:
            raise ParameterError(
                f"{source}: unknown parameter(s) {', '.join(sorted(unknown))}. "
                f"Known: {', '.join(sorted(KNOWN_SECTIONS))}."
            )
    merged = _merge(DEFAULTS, from_file)
    merged = _merge(merged, overrides or {})
    return _validate(merged, project, source, Path(params_file) if params_file else None)


def _validate(p: dict[str, Any], project: Path, source: str, params_file: Path | None) -> RunConfig:
    def fail(msg: str) -> None:
        raise ParameterError(f"{source}: {msg}")

    data = p["data"]
    if not isinstance(data, dict):
        fail("'data' must be a mapping.")
    unknown = set(data) - set(DEFAULTS["data"])
    if unknown:
        fail(f"unknown data parameter(s) {', '.join(sorted(unknown))}.")
    if data["source"] not in ("synthetic", "files"):
        fail(f"data.source must be 'synthetic' or 'files', not {data['source']!r}.")
    if data["source"] == "files":
        if not data["epd"]:
            fail("data.source is 'files' but data.epd lists no prescribing files.")
        if not data["list_sizes"]:
            fail("data.source is 'files' but data.list_sizes lists no list-size files.")
        if not data["organisations"]:
            fail("data.source is 'files' but data.organisations names no practice mapping file.")
    if data["synthetic_scale"] not in (None, "national", "small"):
        fail(f"data.synthetic_scale must be national or small, not {data['synthetic_scale']!r}.")
    share = data["max_reject_share"]
    if not isinstance(share, (int, float)) or not 0 <= share <= 1:
        fail(f"data.max_reject_share must be a number from 0 to 1, not {share!r}.")
    drop = data["month_drop_warning_share"]
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 < drop <= 1:
        fail(f"data.month_drop_warning_share must be a number above 0 and at most 1 (the share by which a "
             f"month's prescribing rows may fall against the month before without a warning), not {drop!r}.")
    if not MONTH_PATTERN.match(str(data["synthetic_end_month"])):
        fail(f"data.synthetic_end_month must look like 2026-09, not {data['synthetic_end_month']!r}.")

    limit = data["ingest_memory_limit"]
    if limit is not None and not MEMORY_SIZE.fullmatch(str(limit)):
        fail(f"data.ingest_memory_limit must be a size such as 2GB or 500MB (or null), not {limit!r}.")
    limit = None if limit is None else str(limit)

    for section, known in (("period", {"end", "months"}), ("organisations", {"level", "codes", "groupings", "levels_above"})):
        if not isinstance(p[section], dict):
            fail(f"'{section}' must be a mapping.")
        unknown = set(p[section]) - known
        if unknown:
            fail(f"unknown {section} parameter(s) {', '.join(sorted(map(str, unknown)))}; "
                 f"{section} takes {', '.join(sorted(known))}.")

    period = p["period"]
    end = str(period.get("end", "latest"))
    if end != "latest" and not MONTH_PATTERN.match(end):
        fail(f"period.end must be 'latest' or a month like 2026-09, not {end!r}.")
    months = period.get("months", 24)
    if not isinstance(months, int) or months < 1:
        fail(f"period.months must be a whole number of months (1 or more), not {months!r}.")

    orgs = p["organisations"]
    level = orgs.get("level", "sub_icb")
    if (level not in ORG_LEVELS and level != GROUP_LEVEL) or level == "england":
        fail(
            f"organisations.level {level!r} is not a level pages can be built for. "
            f"Use one of: {', '.join(l for l in (*ORG_LEVELS, GROUP_LEVEL) if l != 'england')}."
        )
    groupings = orgs.get("groupings")
    if groupings is not None and not isinstance(groupings, str):
        fail(f"organisations.groupings must be the path of a CSV file of practice_code, group_code, "
             f"group_name, not {groupings!r}.")
    if level == GROUP_LEVEL and not groupings:
        fail("organisations.level is group, but organisations.groupings names no groupings file "
             "(a CSV of practice_code, group_code, group_name).")
    levels_above = orgs.get("levels_above", True)
    if not isinstance(levels_above, bool):
        fail(f"organisations.levels_above must be true (also build the pages of the levels above, up to "
             f"region, for the organisations' parents) or false, not {levels_above!r}.")
    codes = _as_list(orgs.get("codes", "all"), "organisations.codes")
    for code in codes or []:
        try:
            check_safe_code(code)
        except ValueError as exc:
            fail(str(exc))

    themes = _as_list(p["themes"], "themes")
    for theme in themes or []:
        if not THEME_PATTERN.match(theme):
            fail(f"theme {theme!r} is not a theme id (lower-case letters, digits and _).")

    workers = p["workers"]
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        fail(f"workers must be a whole number of 1 or more, not {workers!r}.")
    cores = os.cpu_count() or 1
    if workers > MAX_WORKERS_PER_CORE * cores:
        fail(f"workers is {workers}, more than {MAX_WORKERS_PER_CORE * cores} ({MAX_WORKERS_PER_CORE} per "
             f"CPU core; this machine has {cores}). Each worker runs its own Python kernel with the "
             "scientific libraries loaded, so more workers than that only compete for memory; "
             f"try {cores}.")
    if p["runner"] not in ("warm", "papermill"):
        fail(f"runner must be warm (one kernel per worker, reused) or papermill, not {p['runner']!r}.")
    if not isinstance(p["static_charts"], bool):
        fail(f"static_charts must be true or false, not {p['static_charts']!r}.")
    if not isinstance(p["include_drafts"], bool):
        fail(f"include_drafts must be true or false, not {p['include_drafts']!r}.")
    if p["renderer"] not in ("auto", "quarto", "builtin"):
        fail(f"renderer must be auto, quarto or builtin, not {p['renderer']!r}.")

    engine = p["engine"]
    if not isinstance(engine, dict) or set(engine) - {"backend", "spark"}:
        fail(f"engine must be a mapping with backend (duckdb or pyspark) and spark, not {engine!r}.")
    from moopt.spark_engine import ENGINE_BACKENDS, parse_spark_settings

    if engine.get("backend", "duckdb") not in ENGINE_BACKENDS:
        fail(f"engine.backend must be one of {', '.join(ENGINE_BACKENDS)}, not {engine.get('backend')!r}.")
    try:
        spark = parse_spark_settings(engine.get("spark"))
    except ValueError as exc:
        fail(str(exc))

    scheduler = p["scheduler"]
    if scheduler is not None and not re.fullmatch(r"([a-z]+://)?[^\s/:]+:\d+", str(scheduler)):
        fail(f"scheduler must be a Dask scheduler address such as tcp://host:8786, not {scheduler!r}.")

    def resolve_all(paths: Any, what: str) -> list[str]:
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list):
            fail(f"{what} must be a path or a list of paths.")
        return [str((project / x).resolve()) if not Path(x).is_absolute() else x for x in paths]

    def resolve_one(path: Any) -> str | None:
        if not path:
            return None
        return str((project / path).resolve()) if not Path(path).is_absolute() else str(path)

    def resolve_organisations(value: Any) -> str | dict | None:
        """A practice mapping file; ODS files {epraccur: ..., eccg: ..., eauth: ...}; or
        {map: ..., epraccur: ...} (hierarchy from the map, other cost centres from epraccur)."""
        if isinstance(value, dict):
            unknown = set(value) - {"epraccur", "eccg", "eauth", "map"}
            if "map" in value:
                unknown |= set(value) - {"map", "epraccur"}
            if unknown or not ({"epraccur", "map"} & set(value)):
                fail("data.organisations is a practice mapping file, ODS files {epraccur (needed), eccg, eauth}, "
                     f"or {{map (needed), epraccur}}; not {', '.join(sorted(value))}.")
            return {k: resolve_one(v) for k, v in value.items() if v}
        return resolve_one(value)

    outputs = Path(p["outputs"])
    return RunConfig(
        project_dir=project,
        title=str(p["title"]),
        data_source=data["source"],
        synthetic_scale=None if data["synthetic_scale"] is None else str(data["synthetic_scale"]),
        synthetic_seed=int(data["synthetic_seed"]),
        synthetic_end_month=str(data["synthetic_end_month"]),
        synthetic_months=int(data["synthetic_months"]),
        epd_files=resolve_all(data["epd"], "data.epd"),
        list_size_files=resolve_all(data["list_sizes"], "data.list_sizes"),
        organisations_file=resolve_organisations(data["organisations"]),
        practice_attributes_file=resolve_one(data["practice_attributes"]),
        supplied_files=resolve_all(data["supplied"], "data.supplied"),
        reference_files=resolve_all(data["reference"], "data.reference"),
        ingest_memory_limit=limit,
        max_reject_share=float(share),
        month_drop_warning_share=float(drop),
        period_end=end,
        period_months=months,
        org_level=level,
        org_codes=codes,
        levels_above=levels_above,
        themes=themes,
        outputs_dir=outputs if outputs.is_absolute() else project / outputs,
        workers=workers,
        renderer=p["renderer"],
        runner=p["runner"],
        static_charts=p["static_charts"],
        include_drafts=p["include_drafts"],
        groupings_file=resolve_one(groupings),
        engine_backend=engine.get("backend", "duckdb"),
        spark=spark,
        scheduler=None if scheduler is None else str(scheduler),
        raw=p,
        params_file=params_file,
    )
