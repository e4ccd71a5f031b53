"""National benchmarking, computed once per build before any notebook runs.

Adds to every row of the indicator table: confidence intervals (by the kind of
value), the comparison with England and with the organisation's peer group at
95% and 99.8%, and records each organisation's peers. The calculations are
:mod:`moopt.stats` functions; this module only feeds them the national table
and writes the result back to the store.
"""

from __future__ import annotations

import time

import duckdb
import pandas as pd

from moopt import stats
from moopt.indicators.definitions import Indicator
from moopt.orgs import ORG_LEVEL_COLUMNS

PEER_ATTRIBUTES = ("list_size", "percent_aged_65_plus", "deprivation_score")
PEER_GROUP_SIZE = 10


def organisation_attributes(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Attributes peers are chosen by, for every organisation at every level below England.

    List size and the share aged 65 and over come from the latest month's list
    sizes; the deprivation score is the patient-weighted mean of the practices'
    scores (practice_attributes), or missing where none are loaded.
    """
    has_attributes = con.execute(
        "SELECT count(*) FROM practice_attributes").fetchall()[0][0] > 0
    dep = "p.deprivation_score" if has_attributes else "CAST(NULL AS DOUBLE)"
    base = con.execute(f"""
        WITH latest AS (SELECT max(month) AS month FROM list_size),
        lists AS (
            -- the share aged 65+ counts only patients whose age band is known (files of
            -- totals only have none), and is missing where no band is known
            SELECT l.practice_code, sum(l.patients) AS list_size,
                   sum(CASE WHEN l.age_lower >= 65 THEN l.patients ELSE 0 END) AS aged_65_plus,
                   sum(CASE WHEN l.age_lower IS NOT NULL THEN l.patients ELSE 0 END) AS age_known
            FROM list_size l, latest WHERE l.month = latest.month GROUP BY l.practice_code)
        SELECT o.*, lists.list_size, lists.aged_65_plus, lists.age_known, {dep} AS deprivation_score
        FROM organisations o JOIN lists USING (practice_code)
        {"LEFT JOIN practice_attributes p USING (practice_code)" if has_attributes else ""}
    """).fetchdf()
    frames = []
    for level, (code_col, _) in ORG_LEVEL_COLUMNS.items():
        weighted = base.assign(dep_x_list=base["deprivation_score"] * base["list_size"])
        g = weighted.groupby(code_col, as_index=False).agg(
            list_size=("list_size", "sum"), aged_65_plus=("aged_65_plus", "sum"),
            age_known=("age_known", "sum"), dep_x_list=("dep_x_list", "sum"))
        frames.append(pd.DataFrame({
            "org_level": level, "org_code": g[code_col],
            "list_size": g["list_size"].astype(float),
            "percent_aged_65_plus": 100 * g["aged_65_plus"] / g["age_known"].where(g["age_known"] > 0),
            "deprivation_score": g["dep_x_list"] / g["list_size"],
        }))
    attributes = pd.concat(frames, ignore_index=True)
    for column in PEER_ATTRIBUTES:
        attributes[column] = pd.to_numeric(attributes[column], errors="coerce")
    return attributes


def add_statistics(con: duckdb.DuckDBPyConnection, indicators: list[Indicator], progress=None) -> dict:
    """Add intervals and England/peer comparisons to ``indicator_values``; write ``peer_groups``."""
    say = progress or (lambda msg: None)
    started = time.perf_counter()
    table = con.execute("SELECT * FROM indicator_values").fetchdf()
    kinds = {i.id: i.value_kind for i in indicators}
    directions = {i.id: i.improvement_direction for i in indicators}
    table["kind"] = table["indicator_id"].map(kinds)
    table["improvement_direction"] = table["indicator_id"].map(directions)
    table = stats.calculate_intervals(table)
    table = stats.calculate_comparison(table)

    attributes = organisation_attributes(con)
    usable = [a for a in PEER_ATTRIBUTES if attributes[a].notna().all()]
    peers = stats.assign_peer_groups(attributes, usable, k=PEER_GROUP_SIZE)
    table = stats.calculate_peer_benchmark(table, peers)
    table = stats.calculate_comparison(table, benchmark="peer_value", prefix="peer")
    for column in table.columns:  # categorical labels are stored as plain text
        if isinstance(table[column].dtype, pd.CategoricalDtype):
            table[column] = table[column].astype("str").where(table[column].notna(), None)
    say(f"intervals and England/peer comparisons for {len(table):,} rows "
        f"[{time.perf_counter() - started:.1f}s]")
    con.register("benchmarked_df", table)
    con.register("peers_df", peers.merge(attributes, on=["org_level", "org_code"], how="left"))
    try:
        con.execute("BEGIN TRANSACTION")
        con.execute("CREATE OR REPLACE TABLE indicator_values AS SELECT * FROM benchmarked_df "
                    "ORDER BY indicator_id, org_level, org_code, period_type, period")
        con.execute("CREATE OR REPLACE TABLE peer_groups AS SELECT * FROM peers_df")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("benchmarked_df")
        con.unregister("peers_df")
    return {"rows": len(table), "peer_attributes": usable, "peer_group_size": PEER_GROUP_SIZE,
            "seconds": round(time.perf_counter() - started, 1)}
