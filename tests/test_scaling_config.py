"""Run-file options for running past one machine: engine.backend / engine.spark and scheduler."""

from __future__ import annotations

import pytest

from moopt.config import ParameterError, load_config


def test_engine_defaults_to_duckdb(tmp_path):
    config = load_config(project_dir=tmp_path)
    assert config.engine_backend == "duckdb" and config.scheduler is None


def test_pyspark_engine_and_scheduler_are_read(tmp_path):
    params = tmp_path / "run.yml"
    params.write_text("engine:\n  backend: pyspark\n  spark:\n    master: local[1]\n    driver_memory: 2g\n"
                      "    conf: {spark.sql.adaptive.enabled: 'false'}\nscheduler: tcp://10.0.0.5:8786\n")
    config = load_config(params, project_dir=tmp_path)
    assert config.engine_backend == "pyspark"
    assert (config.spark.master, config.spark.driver_memory, config.spark.shuffle_partitions) == ("local[1]", "2g", 4)
    assert config.spark.conf == {"spark.sql.adaptive.enabled": "false"}
    assert config.scheduler == "tcp://10.0.0.5:8786"


@pytest.mark.parametrize("text, words", [
    ("engine: {backend: spark}", "engine.backend must be one of duckdb, pyspark"),
    ("engine: {backend: pyspark, spark: {shuffle_partitions: -1}}", "shuffle_partitions"),
    ("engine: {backend: pyspark, spark: {masterr: local}}", "unknown engine.spark parameter"),
    ("engine: {backend: duckdb, cluster: x}", "engine must be a mapping"),
    ("scheduler: my cluster", "Dask scheduler address"),
])
def test_bad_values_are_named(tmp_path, text, words):
    params = tmp_path / "run.yml"
    params.write_text(text + "\n")
    with pytest.raises(ParameterError, match=words):
        load_config(params, project_dir=tmp_path)
