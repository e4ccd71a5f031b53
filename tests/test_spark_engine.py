"""The whole indicator engine on PySpark (local mode) gives the DuckDB engine's values.

Slow (a Spark session and about 40 queries); skipped, saying why, where Java or pyspark is
missing. The data: the small synthetic set over 13 months (so 12-month rolling values exist),
with its supplied indicators.
"""

from __future__ import annotations

import datetime
import shutil

import numpy as np
import pandas as pd
import pytest

from moopt.spark_engine import SparkSettings, parse_spark_settings, spark_available

# One group: the module fixture (a Spark run) is then made once, on one xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.xdist_group("spark")]

# The engine sums exact decimals, so sums agree; what may differ is how each engine rounds a
# double with more than 12 decimals (a quantity times a lookup factor) to its 12-place decimal.
RELATIVE = 1e-9
KEYS = {"indicator_values": ["indicator_id", "org_level", "org_code", "period_type", "period"],
        "supplied_breakdowns": ["indicator_id", "org_level", "org_code", "period_type", "period", "breakdown"]}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two copies of one small synthetic store: the engine run on DuckDB in one, on Spark in the other."""
    why_not = spark_available()
    if why_not:
        pytest.skip(f"the PySpark engine test needs Spark: {why_not}")
    import duckdb
    import ibis

    from moopt.indicators import load_indicators
    from moopt.indicators.engine import IndicatorEngine
    from moopt.pipeline import make_synthetic
    from moopt.spark_engine import run_engine_on_spark
    from moopt.store import Store, ingest_files

    root = tmp_path_factory.mktemp("spark")
    data = root / "synthetic"
    make_synthetic(data, "small", 7, "2026-09", 13)
    indicators = load_indicators()
    with Store(root / "duck.duckdb") as store:
        ingest_files(store, data / "organisations" / "gp-reg-pat-prac-map.csv", sorted((data / "epd").glob("*.csv")),
                     sorted((data / "list_sizes").glob("*.csv")), supplied=sorted((data / "supplied").glob("*.csv")),
                     indicators=indicators)
    shutil.copy(root / "duck.duckdb", root / "spark.duckdb")
    end, start = datetime.date(2026, 9, 1), datetime.date(2025, 9, 1)

    duck = duckdb.connect(str(root / "duck.duckdb"))
    duck_report = IndicatorEngine(ibis.duckdb.from_connection(duck), indicators).run(end_month=end, start_month=start)
    spark = duckdb.connect(str(root / "spark.duckdb"))
    settings = SparkSettings(master="local[2]", driver_memory="1g", shuffle_partitions=4)
    spark_report = run_engine_on_spark(spark, indicators, settings, root / "spark-work", end_month=end,
                                       start_month=start)
    yield duck, spark, duck_report, spark_report, root
    duck.close()
    spark.close()


def _table(con, name: str) -> pd.DataFrame:
    return con.execute(f"SELECT * FROM {name}").fetchdf().sort_values(KEYS[name]).reset_index(drop=True)


@pytest.mark.parametrize("name", ["indicator_values", "supplied_breakdowns"])
def test_every_value_equals_the_duckdb_engine(stores, name):
    duck, spark, *_ = stores
    expected, got = _table(duck, name), _table(spark, name)
    assert len(expected) > 1000  # the comparison below covers a real table, not an empty one
    assert list(got.columns) == list(expected.columns)
    assert duck.execute(f"DESCRIBE {name}").fetchall() == spark.execute(f"DESCRIBE {name}").fetchall()
    assert len(got) == len(expected)
    pd.testing.assert_frame_equal(got[KEYS[name]], expected[KEYS[name]])
    for column in expected.columns:
        want, have = expected[column], got[column]
        if want.dtype.kind == "f":
            assert (want.isna() == have.isna()).all(), f"{name}.{column}: empty in one engine only"
            known = want.notna()
            close = np.isclose(have[known], want[known], rtol=RELATIVE, atol=0)
            assert close.all(), (f"{name}.{column}: {int((~close).sum())} values differ, e.g. "
                                 f"{want[known][~close].head(3).tolist()} vs {have[known][~close].head(3).tolist()}")
        else:
            pd.testing.assert_series_equal(have, want, obj=f"{name}.{column}")


def test_reports_agree_and_cover_the_run(stores):
    _, spark, duck_report, spark_report, _ = stores
    assert spark_report.rows == duck_report.rows
    assert spark_report.months == duck_report.months and len(spark_report.months) == 13
    assert spark_report.lookup_unmatched_items == duck_report.lookup_unmatched_items
    assert spark_report.practice_months_without_list_size == duck_report.practice_months_without_list_size
    rolling = spark.execute("SELECT count(*) FROM indicator_values WHERE period_type = 'rolling_12m' "
                            "AND value IS NOT NULL").fetchall()[0][0]
    assert rolling > 0  # 13 months give 12-month values, so the windows were compared too


def test_spark_reads_the_monthly_parquet_partitions(stores):
    *_, root = stores
    months = sorted(p.name for p in (root / "spark-work" / "parquet" / "prescribing").iterdir())
    assert months[0] == "month=2025-09" and months[-1] == "month=2026-09" and len(months) == 13


def test_spark_settings_are_validated():
    assert parse_spark_settings({"master": "local[1]", "shuffle_partitions": 2}).shuffle_partitions == 2
    for bad, words in (({"shuffle_partitions": 0}, "shuffle_partitions"), ({"driver_memory": "lots"}, "driver_memory"),
                       ({"remote": "http://x"}, "sc://"), ({"colour": 1}, "unknown engine.spark"),
                       ({"conf": {"memory": "1g"}}, "spark.*")):
        with pytest.raises(ValueError, match=words):
            parse_spark_settings(bad)
