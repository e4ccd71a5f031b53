"""The national results stage: every statistic, computed once, before any page.

After the indicator engine has written ``indicator_values``, this stage
computes, for every organisation at every level and every period:

* confidence intervals (Wilson for proportions, exact Poisson or Byar for
  counts; none for ADQs and costs);
* one funnel per indicator x level x period, centred on England's value, with
  Spiegelhalter's overdispersion adjustment (phi and tau-squared stored), its
  lines for drawing, and each organisation's limits, z-score and position;
* **one verdict** per organisation x indicator x period: higher, similar or
  lower than England at 95% and 99.8%, read from that funnel position and
  nothing else, with the reason in words where there is no verdict;
* the value of its group of similar organisations (peers);
* the cost-saving opportunity of cost-based indicators;
* for the series of the run's organisation level: Making Data Count SPC
  (seasonally adjusted where the indicator is seasonal), the modelled change
  per year and the recent-trend marker;
* intervals for supplied indicators' breakdown groups.

A digest per indicator of everything stored (``results_digests``) lets the build
cache re-run only the pages whose results changed. The work runs one indicator at a time, so memory is bounded by the largest
indicator, not the national table; each step is vectorised over every series
of that indicator. Results go to staging tables that replace the published
ones in one transaction at the end, so a failed run leaves the previous
results in place. Table contracts: :mod:`moopt.tables`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from moopt import stats
from moopt.indicators.definitions import Indicator
from moopt.orgs import ORG_LEVEL_COLUMNS, ORG_LEVEL_PLURALS
from moopt.tables import TABLES, check_columns, table_exists

PEER_ATTRIBUTES = ("list_size", "percent_aged_65_plus", "deprivation_score")
PEER_GROUP_SIZE = 10
CONFIDENCE = (0.95, 0.998)
FUNNEL_LINE_POINTS = 60
MIN_FUNNEL_ORGANISATIONS = 3
MIN_SPC_POINTS = 6
MIN_TREND_POINTS = 24
RESULT_TABLES = ("indicator_results", "funnel_parameters", "funnel_lines", "spc_points", "spc_series",
                 "trends", "breakdown_results")


@dataclass(frozen=True)
class SeriesScope:
    """Which organisations' monthly series get SPC and trend models: the run's level (and codes)."""

    org_level: str
    org_codes: tuple[str, ...] | None = None
    # Levels above that also get pages (every organisation of each: there are few of them).
    levels_above: tuple[str, ...] = ()


# -- peers -------------------------------------------------------------------------------------------

def organisation_attributes(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Attributes peers are chosen by, for every organisation at every level below England.

    List size and the share aged 65 and over come from the latest month's list
    sizes; the deprivation score is the patient-weighted mean of the practices'
    scores (``practice_attributes``), or missing where none are loaded.
    """
    has_attributes = con.execute("SELECT count(*) FROM practice_attributes").fetchall()[0][0] > 0
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
        ORDER BY o.practice_code
    """).fetchdf()
    frames = []
    weighted = base.assign(dep_x_list=base["deprivation_score"] * base["list_size"])
    for level, (code_col, _) in ORG_LEVEL_COLUMNS.items():
        if code_col not in weighted.columns:
            # A run's own groups (moopt.groupings) get no peers: the user chose their members,
            # so there is no national set of such groups to find similar ones in.
            continue
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


# -- the verdict ----------------------------------------------------------------------------------------

def verdict_columns(frame: pd.DataFrame, group_sizes: pd.Series) -> pd.DataFrame:
    """Add ``comparison_*``, ``assessment_*`` and ``not_compared_reason`` from the funnel position.

    The comparison with England is the organisation's position in the
    overdispersion-adjusted funnel of its level and period: above the upper
    limit is "higher", below the lower "lower", otherwise "similar". The
    assessment reads it with the indicator's improvement direction.
    """
    out = frame
    direction = out["improvement_direction"].to_numpy(dtype=object)
    better_when = np.select([direction == "increase", direction == "decrease"], ["higher", "lower"], None)
    for level in ("95", "99_8"):
        flag = out[f"funnel_flag_{level}"].to_numpy(dtype=object)
        side = np.select([flag == "above", flag == "inside", flag == "below"], ["higher", "similar", "lower"], None)
        assessment = np.where(side == "similar", "similar",
                              np.where(better_when == None, side,  # noqa: E711 - elementwise
                                       np.where(side == better_when, "better", "worse")))
        out[f"comparison_{level}"] = side
        out[f"assessment_{level}"] = np.where(side == None, None, assessment)  # noqa: E711
    compared = out["comparison_99_8"].notna().to_numpy()
    too_few = group_sizes.reindex(out.index).fillna(0).to_numpy() < MIN_FUNNEL_ORGANISATIONS
    # The first reason that applies, in this order; "No funnel limits here." when none does.
    reason = np.select(
        [compared,
         (out["org_level"] == "england").to_numpy(),
         out["value"].isna().to_numpy(),
         out["england_value"].isna().to_numpy(),
         too_few,
         (out["kind"] == "none").to_numpy()],
        [None,
         "England is the benchmark.",
         "No value for this period (no denominator, or too few months).",
         "No England value for this period.",
         f"Fewer than {MIN_FUNNEL_ORGANISATIONS} organisations at this level have a value, "
         "too few to set funnel limits.",
         "ADQs and costs are not counts, so there are no limits of chance to compare with; "
         "the percentile shows how unusual the value is."],
        "No funnel limits here.")
    out["not_compared_reason"] = reason
    return out


# -- per indicator --------------------------------------------------------------------------------------

def _funnel(frame: pd.DataFrame, indicator: Indicator) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.Series]:
    """Funnel limits and positions for every row, the funnels' parameters and their lines."""
    group = ["indicator_id", "org_level", "period", "period_type"]
    usable = ((frame["org_level"] != "england") & frame["value"].notna() & (frame["denominator"] > 0)
              & frame["numerator"].notna() & frame["england_value"].notna())
    sizes = usable.groupby([frame[c] for c in group]).transform("sum")
    members = frame[usable & (sizes >= MIN_FUNNEL_ORGANISATIONS)]
    columns = ["funnel_target", *(f"funnel_{s}_{c}" for c in ("95", "99_8") for s in ("lower", "upper")),
               "funnel_z", "funnel_flag_95", "funnel_flag_99_8"]
    if members.empty:
        empty = pd.DataFrame(index=frame.index, columns=columns)
        return empty, pd.DataFrame(), pd.DataFrame(), sizes
    options = dict(kind=indicator.value_kind, multiplier="multiplier", target="england_value",
                   group_columns=group)
    limits = stats.calculate_funnel_limits(members, confidence=CONFIDENCE, **options)
    params = stats.calculate_funnel_parameters(members, **options)
    lines = stats.calculate_funnel_lines(params, points=FUNNEL_LINE_POINTS, confidence=CONFIDENCE, prefix="")
    # A funnel whose organisations all have one denominator (e.g. shares of the same practices)
    # has a grid of one repeated size: one row per size is what a line needs.
    lines = lines.drop_duplicates(subset=[*group, "denominator"])
    per_row = limits[columns].reindex(frame.index)
    return per_row, params, lines, sizes


def _series(frame: pd.DataFrame, indicator: Indicator, scope: SeriesScope) -> pd.DataFrame:
    """The monthly (or supplied-period) series SPC and trends use, for the organisations in scope."""
    kind = indicator.main_period_type if indicator.is_supplied else "month"
    own_level = frame["org_level"] == scope.org_level
    if scope.org_codes is not None:
        own_level &= frame["org_code"].isin(scope.org_codes)
    rows = frame[(own_level | frame["org_level"].isin(scope.levels_above)) & (frame["period_type"] == kind)
                 & frame["value"].notna()]
    return rows.sort_values(["org_level", "org_code", "period"])


def _spc(series: pd.DataFrame, indicator: Indicator) -> tuple[pd.DataFrame, pd.DataFrame]:
    counts = series.groupby(["org_level", "org_code"])["period"].transform("size")
    series = series[counts >= MIN_SPC_POINTS].copy()
    if series.empty:
        return pd.DataFrame(), pd.DataFrame()
    series["seasonally_adjusted"] = False
    if indicator.seasonal:
        # Degree 0: with two or three cycles a degree-1 seasonal fit absorbs all month-to-month
        # noise and leaves a straight line, on which SPC would flag nearly every point.
        adjusted = stats.calculate_seasonal_adjustment(series, on_short_series="skip", seasonal_degree=0)
        # a series is drawn adjusted entirely or not at all (STL needs 24 months without gaps)
        whole = adjusted["seasonally_adjusted"].notna().groupby(
            [series["org_level"], series["org_code"]]).transform("all")
        series["value"] = adjusted["seasonally_adjusted"].where(whole, series["value"])
        series["seasonally_adjusted"] = whole
    # Supplied 12-month values (QOF years) do not overlap, so the rolling-sum guard does not apply.
    points = stats.calculate_spc(series, period_type=None if indicator.is_supplied else "period_type")
    summary = stats.calculate_spc_summary(points)
    return points, summary


def _trends(series: pd.DataFrame, indicator: Indicator) -> pd.DataFrame:
    """Modelled change per year (24+ consecutive months) and, for non-seasonal ones, the recent trend."""
    if indicator.value_kind == "none" or indicator.is_supplied:
        return pd.DataFrame()
    series = series[(series["denominator"] > 0) & series["numerator"].notna()]
    counts = series.groupby(["org_level", "org_code"])["period"].transform("size")
    series = series[counts >= MIN_TREND_POINTS]
    if series.empty:
        return pd.DataFrame()
    model = stats.calculate_trend_model(series, seasonal=indicator.seasonal, on_short_series="skip")
    model["seasonal_terms"] = indicator.seasonal
    if indicator.seasonal:
        model["recent_trend"] = None
    else:
        recent = stats.calculate_recent_trend(series, kind=indicator.value_kind)
        model = model.merge(recent[["indicator_id", "org_level", "org_code", "period_type", "recent_trend"]],
                            on=["indicator_id", "org_level", "org_code", "period_type"], how="left")
    return model


class PhaseTimes(dict):
    """Seconds spent in each phase, summed over indicators (the benchmark and the build log print them)."""

    @contextmanager
    def phase(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - started


def indicator_results(frame: pd.DataFrame, indicator: Indicator, peers: pd.DataFrame,
                      scope: SeriesScope, times: PhaseTimes | None = None) -> dict[str, pd.DataFrame]:
    """Every statistic of one indicator, from its rows of ``indicator_values``."""
    times = times if times is not None else PhaseTimes()
    with times.phase("per-row statistics"):
        frame = frame.reset_index(drop=True)
        frame["kind"] = indicator.value_kind
        frame["improvement_direction"] = indicator.improvement_direction
        frame = stats.calculate_intervals(frame, confidence=CONFIDENCE)
        # Peer values are shown for the organisations that get pages; practices (85% of the rows)
        # only get them in a run at practice level.
        with_peers = (frame["org_level"] != "practice") | (scope.org_level == "practice")
        frame = pd.concat([stats.calculate_peer_benchmark(frame[with_peers], peers),
                           frame[~with_peers]]).sort_index()
        per_row, params, lines, sizes = _funnel(frame, indicator)
        frame = pd.concat([frame, per_row], axis=1)
        frame = verdict_columns(frame, sizes)
        if indicator.is_cost_based:
            frame = stats.calculate_cost_savings(frame)
    with times.phase("SPC"):
        series = _series(frame, indicator, scope)
        points, summary = _spc(series, indicator)
    with times.phase("trend models"):
        trends = _trends(series, indicator)
    return {"indicator_results": frame, "funnel_parameters": params, "funnel_lines": lines,
            "spc_points": points, "spc_series": summary, "trends": trends}


# -- writing ---------------------------------------------------------------------------------------------

class _Staging:
    """Staging copies of the result tables, swapped in together at the end."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        for name in RESULT_TABLES:
            columns = ", ".join(f"{c.name} {c.type}" for c in TABLES[name].columns)
            con.execute(f"CREATE OR REPLACE TABLE _staging_{name} ({columns})")

    def append(self, name: str, frame: pd.DataFrame) -> None:
        if frame is None or frame.empty:
            return
        present = set(frame.columns)
        select = ", ".join(
            f"CAST({c.name} AS {c.type}) AS {c.name}" if c.name in present else f"CAST(NULL AS {c.type})"
            for c in TABLES[name].columns)
        frame = frame.copy()
        for column in frame.columns:  # categorical labels are stored as plain text
            if isinstance(frame[column].dtype, pd.CategoricalDtype):
                frame[column] = frame[column].astype("object").where(frame[column].notna(), None)
        self.con.register("_staging_frame", frame)
        try:
            self.con.execute(f"INSERT INTO _staging_{name} SELECT {select} FROM _staging_frame")
        finally:
            self.con.unregister("_staging_frame")

    def publish(self, peers: pd.DataFrame) -> None:
        con = self.con
        con.register("_peers_frame", peers)
        try:
            con.execute("BEGIN TRANSACTION")
            for name in RESULT_TABLES:
                con.execute(f"DROP TABLE IF EXISTS {name}")
                order = {"indicator_results": " ORDER BY indicator_id, org_level, org_code, period_type, period",
                         "funnel_lines": " ORDER BY indicator_id, org_level, period_type, period, denominator",
                         }.get(name, "")
                if order:
                    con.execute(f"CREATE TABLE {name} AS SELECT * FROM _staging_{name}{order}")
                    con.execute(f"DROP TABLE _staging_{name}")
                else:
                    con.execute(f"ALTER TABLE _staging_{name} RENAME TO {name}")
            con.execute("CREATE OR REPLACE TABLE peer_groups AS SELECT * FROM _peers_frame")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        finally:
            con.unregister("_peers_frame")
        for name in RESULT_TABLES:
            check_columns(con, name)
        write_digests(con)

    def discard(self) -> None:
        for name in RESULT_TABLES:
            self.con.execute(f"DROP TABLE IF EXISTS _staging_{name}")


def write_digests(con: duckdb.DuckDBPyConnection) -> None:
    """``results_digests``: per indicator, an order-independent hash of its rows in every result table.

    Pages read the results of their indicators; the build cache compares these digests (with the
    notebook, its parameters and moopt's source) to decide whether a page must be re-run.
    """
    parts = " UNION ALL ".join(
        f"SELECT indicator_id, '{name}' AS source, bit_xor(hash(t)) AS h FROM {name} t GROUP BY indicator_id"
        for name in RESULT_TABLES)
    con.execute(f"""
        CREATE OR REPLACE TABLE results_digests AS
        SELECT indicator_id, md5(string_agg(source || ':' || h::VARCHAR, ',' ORDER BY source)) AS digest
        FROM ({parts}) GROUP BY indicator_id ORDER BY indicator_id""")
    check_columns(con, "results_digests")


def _breakdowns(con: duckdb.DuckDBPyConnection, indicators: list[Indicator]) -> pd.DataFrame:
    if not table_exists(con, "supplied_breakdowns"):
        return pd.DataFrame()
    rows = con.execute("SELECT indicator_id, org_level, org_code, org_name, period, period_type, breakdown, "
                       "numerator, denominator FROM supplied_breakdowns "
                       "ORDER BY indicator_id, org_level, org_code, period_type, period, breakdown").fetchdf()
    if rows.empty:
        return rows
    multipliers = {i.id: i.multiplier for i in indicators}
    kinds = {i.id: i.value_kind for i in indicators}
    rows["multiplier"] = rows["indicator_id"].map(multipliers).astype(float)
    rows["kind"] = rows["indicator_id"].map(kinds)
    rows = stats.calculate_intervals(rows, confidence=CONFIDENCE)
    rows["value"] = rows["numerator"] / rows["denominator"].where(rows["denominator"] > 0) * rows["multiplier"]
    return rows


def compute_results(con: duckdb.DuckDBPyConnection, indicators: list[Indicator], scope: SeriesScope,
                    progress=None) -> dict:
    """Compute and publish every result table from ``indicator_values``; return a short report."""
    say = progress or (lambda msg: None)
    started = time.perf_counter()
    attributes = organisation_attributes(con)
    usable = [a for a in PEER_ATTRIBUTES if attributes[a].notna().all()]
    peers = stats.assign_peer_groups(attributes, usable, k=PEER_GROUP_SIZE)
    present = {r[0] for r in con.execute("SELECT DISTINCT indicator_id FROM indicator_values").fetchall()}
    staging = _Staging(con)
    counts = {name: 0 for name in RESULT_TABLES}
    times = PhaseTimes()
    try:
        for number, indicator in enumerate([i for i in indicators if i.id in present], start=1):
            with times.phase("reading"):
                # In key order: DuckDB need not keep insertion order (see Store.memory_limit), and
                # the statistics add floats in row order, so the same rows must come in the same order.
                frame = con.execute("SELECT * FROM indicator_values WHERE indicator_id = ? "
                                    "ORDER BY org_level, org_code, period_type, period",
                                    [indicator.id]).fetchdf()
            for name, table in indicator_results(frame, indicator, peers, scope, times).items():
                with times.phase("writing"):
                    staging.append(name, table)
                counts[name] += len(table)
            say(f"results {number}/{len(present)}: {indicator.id} ({len(frame):,} rows) "
                f"[{time.perf_counter() - started:.1f}s]")
        breakdowns = _breakdowns(con, indicators)
        staging.append("breakdown_results", breakdowns)
        counts["breakdown_results"] = len(breakdowns)
        with times.phase("publishing"):
            staging.publish(peers.merge(attributes, on=["org_level", "org_code"], how="left"))
    except BaseException:
        staging.discard()
        raise
    seconds = time.perf_counter() - started
    level = " and ".join(ORG_LEVEL_PLURALS.get(lv, lv) for lv in (*scope.levels_above, scope.org_level))
    say(f"national results: {counts['indicator_results']:,} rows, {counts['funnel_parameters']:,} funnels, "
        f"{counts['spc_series']:,} SPC series and {counts['trends']:,} trend models of {level} [{seconds:.1f}s]")
    say("national results by phase: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()))
    return {"rows": counts, "peer_attributes": usable, "peer_group_size": PEER_GROUP_SIZE,
            "series_level": scope.org_level, "series_levels_above": list(scope.levels_above), "seconds": round(seconds, 1),
            "phase_seconds": {k: round(v, 2) for k, v in times.items()}}
