"""The indicator engine on Apache Spark, through Ibis's PySpark backend.

The same :class:`~moopt.indicators.engine.IndicatorEngine` code that runs on the DuckDB
store runs here on a Spark session: the store's input tables are exported as Parquet
(:mod:`moopt.parquet_store`, prescribing partitioned by month), registered in Spark as
views under the names the engine reads, the engine runs, and its result tables
(``indicator_values`` and, with supplied data, ``supplied_breakdowns``) are written back
into the DuckDB store, so every later stage of a build reads them as it always does.

Choose it in the run file::

    engine:
      backend: pyspark
      spark:
        master: "local[2]"           # or spark://host:7077, yarn, k8s://...
        remote: null                 # or sc://host:15002 to use an existing Spark Connect server
        driver_memory: 1g
        shuffle_partitions: 4
        parquet_dir: null            # default <outputs>/spark/parquet; a cluster must be able to read it
        conf: {}                     # any other spark.* settings

Spark parses a decimal literal such as ``100.0`` in SQL as a DECIMAL, whereas Ibis (and
DuckDB through Ibis) treat a float literal as a double; a column that is only a literal
(an indicator's multiplier) would then change type on Spark. :class:`_DoubleLiteralCompiler`
casts float literals to DOUBLE, so the results have the types the DuckDB run gives.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable

from moopt.parquet_store import ENGINE_TABLES, PRESCRIBING, export_parquet, parquet_glob

ENGINE_BACKENDS = ("duckdb", "pyspark")
# The tables the engine writes that later stages read (the scratch tables it drops itself).
RESULT_TABLES = ("indicator_values", "supplied_breakdowns")
SPARK_KEYS = {"master", "remote", "driver_memory", "shuffle_partitions", "parquet_dir", "conf", "app_name"}
SPARK_MEMORY = r"\d+[kmgt]?"


@dataclass(frozen=True)
class SparkSettings:
    """Where and how the engine runs on Spark (the run file's ``engine.spark``)."""

    master: str = "local[2]"
    remote: str | None = None
    driver_memory: str = "1g"
    shuffle_partitions: int = 4
    parquet_dir: str | None = None
    app_name: str = "moopt-indicators"
    conf: dict[str, str] = field(default_factory=dict)


def parse_spark_settings(raw: Any, where: str = "engine.spark") -> SparkSettings:
    """Validate the run file's ``engine.spark`` mapping; raise ValueError naming the bad key."""
    import re

    if raw is None:
        return SparkSettings()
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping (master, remote, driver_memory, shuffle_partitions, "
                         f"parquet_dir, conf), not {raw!r}.")
    unknown = set(raw) - SPARK_KEYS
    if unknown:
        raise ValueError(f"unknown {where} parameter(s) {', '.join(sorted(map(str, unknown)))}; "
                         f"{where} takes {', '.join(sorted(SPARK_KEYS))}.")
    settings = SparkSettings(**{k: v for k, v in raw.items() if v is not None})
    if not isinstance(settings.master, str) or not settings.master:
        raise ValueError(f"{where}.master must be a Spark master URL such as local[2], not {settings.master!r}.")
    if settings.remote is not None and not str(settings.remote).startswith("sc://"):
        raise ValueError(f"{where}.remote must be a Spark Connect URL (sc://host:port), not {settings.remote!r}.")
    if not re.fullmatch(SPARK_MEMORY, str(settings.driver_memory), re.I):
        raise ValueError(f"{where}.driver_memory must be a size such as 1g or 512m, "
                         f"not {settings.driver_memory!r}.")
    partitions = settings.shuffle_partitions
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"{where}.shuffle_partitions must be a whole number of 1 or more, not {partitions!r}.")
    if not isinstance(settings.conf, dict) or not all(str(k).startswith("spark.") for k in settings.conf):
        raise ValueError(f"{where}.conf must map spark.* settings to values, not {settings.conf!r}.")
    return settings


def spark_available() -> str | None:
    """None when PySpark and a Java runtime are here; else why not, in a sentence."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install 'moopt[spark]')"
    import os

    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        return "no Java runtime (Spark needs Java 17 or later: install a JDK or set JAVA_HOME)"
    return None


def spark_session(settings: SparkSettings, warehouse_dir: Path):
    """A Spark session as ``settings`` asks: local or cluster master, or a Spark Connect server."""
    from pyspark.sql import SparkSession

    if settings.remote:
        return SparkSession.builder.remote(settings.remote).appName(settings.app_name).getOrCreate()
    builder = (SparkSession.builder.master(settings.master).appName(settings.app_name)
               .config("spark.driver.memory", settings.driver_memory)
               .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
               .config("spark.sql.warehouse.dir", str(warehouse_dir))
               # Dates are dates everywhere: no shift by the machine's time zone.
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false"))
    for key, value in settings.conf.items():
        builder = builder.config(key, str(value))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _double_literal_compiler():
    from ibis.backends.sql.compilers.pyspark import PySparkCompiler

    class _DoubleLiteralCompiler(PySparkCompiler):
        """Float literals as DOUBLE (Spark SQL reads ``100.0`` as DECIMAL(4,1))."""

        def visit_Literal(self, op, *, value, dtype):
            result = super().visit_Literal(op, value=value, dtype=dtype)
            if value is not None and dtype.is_floating():
                return self.cast(result, dtype)
            return result

    return _DoubleLiteralCompiler()


def connect_ibis(session):
    """An Ibis PySpark backend on ``session`` whose float literals are doubles."""
    import ibis

    backend = ibis.pyspark.connect(session)
    backend.compiler = _double_literal_compiler()  # this connection only; ibis's class is untouched
    return backend


def register_parquet(session, folder: Path, tables: tuple[str, ...] = ENGINE_TABLES) -> None:
    """Register the exported ``tables`` in ``session`` as temporary views of the same names."""
    from pyspark.sql import functions as F

    for table in tables:
        if table == PRESCRIBING:
            frame = session.read.option("basePath", str(folder / PRESCRIBING)).parquet(str(folder / PRESCRIBING))
            # The partition folder holds the month as YYYY-MM text; the engine compares dates.
            frame = frame.withColumn("month", F.to_date(F.concat(F.col("month").cast("string"), F.lit("-01"))))
        else:
            frame = session.read.parquet(str(Path(parquet_glob(folder, table)).parent))
        frame.createOrReplaceTempView(table)


def run_engine_on_spark(con, indicators, settings: SparkSettings, work_dir: Path,
                        end_month: date | None = None, start_month: date | None = None,
                        progress: Callable[[str], None] | None = None):
    """Run the indicator engine on Spark over the store behind ``con``; write its results back.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The store. Its engine tables are exported to Parquet; afterwards its
        ``indicator_values`` (and ``supplied_breakdowns``, when supplied data exist) are
        replaced by Spark's.
    indicators : list of Indicator
        The definitions, exactly as the DuckDB engine takes them.
    settings : SparkSettings
        Master (or Spark Connect URL), memory and the Parquet folder.
    work_dir : Path
        Scratch space: the Parquet export (unless ``settings.parquet_dir``), Spark's
        warehouse of intermediate tables and the result files.
    end_month, start_month : date, optional
        As :meth:`IndicatorEngine.run`.

    Returns
    -------
    EngineReport
        The engine's report; ``seconds`` covers export, Spark and the copy back.
    """
    from moopt.indicators.engine import IndicatorEngine

    why_not = spark_available()
    if why_not:
        raise RuntimeError(f"engine.backend is pyspark but {why_not}.")
    say = progress or (lambda msg: None)
    started = time.perf_counter()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    parquet_dir = Path(settings.parquet_dir) if settings.parquet_dir else work_dir / "parquet"
    export = export_parquet(con, parquet_dir, tables=ENGINE_TABLES)
    say(f"store exported to Parquet in {parquet_dir}: {export.tables[PRESCRIBING]:,} prescribing rows in "
        f"{len(export.months)} monthly partitions [{time.perf_counter() - started:.1f}s]")
    warehouse = Path(tempfile.mkdtemp(prefix="warehouse-", dir=work_dir))
    session = spark_session(settings, warehouse)
    try:
        register_parquet(session, parquet_dir)
        backend = connect_ibis(session)
        say(f"Spark session {settings.remote or settings.master} ready [{time.perf_counter() - started:.1f}s]")
        report = IndicatorEngine(backend, indicators).run(end_month=end_month, start_month=start_month,
                                                         progress=say)
        results = work_dir / "results"
        shutil.rmtree(results, ignore_errors=True)
        written = []
        for table in RESULT_TABLES:
            if table in backend.list_tables():
                session.table(table).write.mode("overwrite").parquet(str(results / table))
                written.append(table)
    finally:
        if not settings.remote:
            session.stop()
    _load_results(con, results, written)
    # The Parquet export stays (a cluster, or `moopt export-parquet --month`, can reuse it).
    for scratch in (results, warehouse):
        shutil.rmtree(scratch, ignore_errors=True)
    report.seconds = time.perf_counter() - started
    say(f"{', '.join(written)} copied back into the store [{report.seconds:.1f}s]")
    return report


def _load_results(con, results: Path, tables: list[str]) -> None:
    """Replace the store's result tables by Spark's, in one transaction, in the engine's row order."""
    con.execute("BEGIN TRANSACTION")
    try:
        for table in tables:
            pattern = str(results / table / "*.parquet")
            order = (" ORDER BY indicator_id, org_level, org_code, period_type, period"
                     if table == "indicator_values" else "")
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM read_parquet('{pattern}'){order}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
