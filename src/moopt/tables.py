"""The store's tables: their names, their columns, and the queries pages use.

This module is the single owner of the contract between moopt's stages. The
ingest stage (:mod:`moopt.store`) writes the input tables, the indicator
engine (:mod:`moopt.indicators.engine`) writes ``indicator_values``, and the
national results stage (:mod:`moopt.results`) writes every statistic once:
``indicator_results``, ``funnel_parameters``, ``funnel_lines``,
``spc_points``, ``spc_series``, ``trends``, ``breakdown_results`` and the
one-row ``run_facts``. Pages read them through :class:`ResultsReader` and
compute nothing of their own.

``docs/tables.md`` is generated from :data:`TABLES` by
``python -m moopt.tables > docs/tables.md``; a test fails when the two differ,
and another checks that a built store has exactly these columns.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import date

import duckdb
import pandas as pd


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    unit: str = ""  # what a number is counted in; empty for text, codes and flags


@dataclass(frozen=True)
class Table:
    name: str
    written_by: str
    grain: str
    description: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


# Units by column name: a name means the same thing in every table that has it.
_IN_VALUE_UNIT = "the indicator's unit (as `value`)"
UNITS: dict[str, str] = {
    "multiplier": "number",
    "n_practices": "practices",
    "period": "date (YYYY-MM-DD)",
    "numerator": "what the indicator counts (items, ADQs, DDDs, pounds, patients...; see its definition)",
    "denominator": "what the indicator divides by (patients, STAR-PU, items, discharges...; see its definition)",
    "value": "the indicator's unit (see its definition, e.g. items per 1,000 patients)",
    "percentile": "percentile, 0 to 100",
    "funnel_z": "standard deviations (z-score)",
    "cost_saving_10": "pounds (GBP)",
    "cost_saving_50": "pounds (GBP)",
    **{name: _IN_VALUE_UNIT for name in (
        "england_value", "lowest", "quartile_25", "quartile_75", "highest", "peer_value", "funnel_target",
        *(f"decile_{d}" for d in range(10, 100, 10)),
        *(f"{side}_{c}" for side in ("lower", "upper") for c in ("95", "99_8")),
        *(f"funnel_{side}_{c}" for side in ("lower", "upper") for c in ("95", "99_8")))},
}


def _cols(*specs: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(*spec, unit=UNITS.get(spec[0], "")) for spec in specs)


SERIES_KEY = (
    ("indicator_id", "VARCHAR", "Indicator id, e.g. AMR01 (see the definitions)."),
    ("org_level", "VARCHAR", "practice, pcn, sub_icb, icb, region or england; group for a run's own groups."),
    ("org_code", "VARCHAR", "Organisation code at that level (ENG for England)."),
)
PERIOD_KEY = (
    ("period", "DATE", "First day of the period's last month."),
    ("period_type", "VARCHAR", "month, quarter, rolling_12m (12 months to `period`) or year (supplied)."),
)
GROUP_KEY = (
    ("indicator_id", "VARCHAR", "Indicator id."),
    ("org_level", "VARCHAR", "The level whose organisations form the funnel."),
    *PERIOD_KEY,
)
CONFIDENCE_LEVELS = ("95", "99_8")

INDICATOR_VALUE_COLUMNS = (
    *SERIES_KEY,
    ("org_name", "VARCHAR", "Organisation name."),
    ("multiplier", "DOUBLE", "value = numerator / denominator x multiplier (e.g. 1,000 or 100)."),
    ("n_practices", "BIGINT", "Practices contributing to the value."),
    ("pcn_code", "VARCHAR", "Parent PCN (practice rows only)."),
    ("sub_icb_code", "VARCHAR", "Parent sub-ICB location (rows below it)."),
    ("icb_code", "VARCHAR", "Parent ICB (rows below it)."),
    ("region_code", "VARCHAR", "Parent region (rows below it)."),
    ("group_code", "VARCHAR", "The run's own group of practices (practice rows of runs with a groupings file)."),
    *PERIOD_KEY,
    ("numerator", "DOUBLE", "Sum of the numerator over member practices (and months for 12-month values)."),
    ("denominator", "DOUBLE", "Sum of the denominator; population denominators are averaged over 12 months."),
    ("value", "DOUBLE", "numerator / denominator x multiplier; empty when the denominator is 0 or missing."),
    ("england_value", "DOUBLE", "England's value for the same indicator and period."),
    ("percentile", "DOUBLE", "OpenPrescribing percentile among organisations of the level with a value."),
    *((f"decile_{d}", "DOUBLE", f"{d}th percentile of the level's values (linear interpolation).")
      for d in range(10, 100, 10)),
    ("lowest", "DOUBLE", "Lowest value among the level's organisations."),
    ("quartile_25", "DOUBLE", "25th percentile of the level's values (linear interpolation)."),
    ("quartile_75", "DOUBLE", "75th percentile of the level's values (linear interpolation)."),
    ("highest", "DOUBLE", "Highest value among the level's organisations."),
)

TABLES: dict[str, Table] = {t.name: t for t in (
    Table("run_facts", "moopt.pipeline", "build (a single row)",
          "The resolved facts of the last run. Every stage after the engine reads these instead of "
          "re-deriving them.", _cols(
              ("period_start", "DATE", "First month of the reporting period."),
              ("period_end", "DATE", "Last month of the reporting period (the latest month shown)."),
              ("window_start", "DATE", "First month read: the period plus the 11 months a 12-month value needs."),
              ("period_months", "INTEGER", "Months in the reporting period."),
              ("org_level", "VARCHAR", "The run's organisation level (pages are made for it)."),
              ("synthetic", "BOOLEAN", "True when the data are moopt's synthetic set."),
              ("practices_with_prescribing", "BIGINT", "GP practices with prescribing in the store."),
              ("sub_icbs_with_prescribing", "BIGINT", "Sub-ICB locations those practices belong to."),
              ("whole_england", "BOOLEAN", "False when the data cover only part of England."),
              ("has_rolling", "BOOLEAN", "True when there are 12-month values (a year of data)."),
              ("engine_key", "VARCHAR", "Hash of every input of the indicator engine."),
              ("results_key", "VARCHAR", "Hash of the engine key and the run facts the results stage uses."),
              ("engine_report", "VARCHAR", "JSON: rows, timings and notes from the engine and results."),
          )),
    Table("indicator_values", "moopt.indicators.engine", "indicator x level x organisation x period",
          "Every indicator at every level and period: numerator, denominator, value, England value, "
          "percentile and the level's deciles and quartiles.", _cols(*INDICATOR_VALUE_COLUMNS)),
    Table("indicator_results", "moopt.results", "indicator x level x organisation x period",
          "indicator_values plus every per-row statistic, computed once nationally: confidence "
          "intervals, the one comparison with England (the overdispersion-adjusted funnel), the peer "
          "value and the cost-saving opportunity.", _cols(
              *INDICATOR_VALUE_COLUMNS,
              ("kind", "VARCHAR", "proportion, rate, ratio or none (ADQs and costs: no interval)."),
              ("improvement_direction", "VARCHAR", "increase, decrease or neutral."),
              *((f"{side}_{c}", "DOUBLE", f"{side.title()} {c.replace('_', '.')}% confidence limit of the value "
                 "(Wilson for proportions, exact Poisson below 10 events and Byar above).")
                for c in CONFIDENCE_LEVELS for side in ("lower", "upper")),
              ("peer_value", "DOUBLE", "Combined value of the organisation's similar organisations (see peer_groups)."),
              ("funnel_target", "DOUBLE", "Centre of the funnel: England's value."),
              *((f"funnel_{side}_{c}", "DOUBLE", f"{side.title()} {c.replace('_', '.')}% funnel limit at this "
                 "organisation's denominator (overdispersion-adjusted).")
                for c in CONFIDENCE_LEVELS for side in ("lower", "upper")),
              ("funnel_z", "DOUBLE", "Adjusted z-score of the value against England (funnel scale)."),
              *((f"comparison_{c}", "VARCHAR", f"The verdict at {c.replace('_', '.')}%: higher, similar or "
                 "lower than England, from the funnel; empty when not compared.")
                for c in CONFIDENCE_LEVELS),
              *((f"assessment_{c}", "VARCHAR", f"The {c.replace('_', '.')}% verdict read with the direction: "
                 "better, worse or similar; higher or lower for neutral indicators.")
                for c in CONFIDENCE_LEVELS),
              ("not_compared_reason", "VARCHAR", "Why there is no verdict, in words (empty when compared)."),
              ("cost_saving_10", "DOUBLE", "Cost-based indicators: pounds saved at the level's 10th percentile."),
              ("cost_saving_50", "DOUBLE", "Cost-based indicators: pounds saved at the level's median."),
          )),
    Table("funnel_parameters", "moopt.results", "indicator x level x period",
          "One funnel per indicator, level and period: its centre and overdispersion estimate.", _cols(
              *GROUP_KEY,
              ("funnel_kind", "VARCHAR", "The indicator's kind, which sets the limits' family."),
              ("funnel_target", "DOUBLE", "Centre line: England's value."),
              ("funnel_organisations", "BIGINT", "Organisations with a value (k)."),
              ("funnel_phi", "DOUBLE", "Overdispersion factor phi (Winsorised z-scores)."),
              ("funnel_tau2", "DOUBLE", "Between-organisation variance tau-squared (0 when not overdispersed)."),
              ("funnel_adjusted", "BOOLEAN", "True when the limits are widened by tau-squared."),
              ("denominator_min", "DOUBLE", "Smallest denominator in the funnel."),
              ("denominator_max", "DOUBLE", "Largest denominator in the funnel."),
          )),
    Table("funnel_lines", "moopt.results", "indicator x level x period x denominator",
          "Funnel limit lines for drawing, on a grid of denominators spanning the funnel.", _cols(
              *GROUP_KEY,
              ("denominator", "DOUBLE", "Grid point."),
              *((f"{side}_{c}", "DOUBLE", f"{side.title()} {c.replace('_', '.')}% limit at that denominator.")
                for c in CONFIDENCE_LEVELS for side in ("lower", "upper")),
          )),
    Table("spc_points", "moopt.results", "indicator x organisation x period (series levels only)",
          "Statistical process control (Making Data Count XmR) for every monthly series, seasonally "
          "adjusted where the indicator is seasonal.", _cols(
              *SERIES_KEY, *PERIOD_KEY,
              ("value", "DOUBLE", "The value plotted (seasonally adjusted when `seasonally_adjusted`)."),
              ("seasonally_adjusted", "BOOLEAN", "True when STL removed the seasonal pattern first."),
              ("spc_mean", "DOUBLE", "Centre line."),
              ("spc_lower_limit", "DOUBLE", "Lower process limit (mean - 2.66 x mean moving range)."),
              ("spc_upper_limit", "DOUBLE", "Upper process limit."),
              ("spc_rule", "VARCHAR", "Special-cause rule the point triggers, if any."),
              ("spc_point_type", "VARCHAR", "common_cause, special_cause_improvement/concern or neutral_high/low."),
          )),
    Table("spc_series", "moopt.results", "indicator x organisation (series levels only)",
          "One row per SPC series: the variation icon of its latest point.", _cols(
              *SERIES_KEY,
              ("period_type", "VARCHAR", "Period type of the series' points."),
              ("last_period", "DATE", "Latest point."),
              ("variation_icon", "VARCHAR", "common_cause, improvement_high/low, concern_high/low, neutral_high/low."),
              ("spc_points", "BIGINT", "Points in the series."),
              ("spc_trial_limits", "BOOLEAN", "True with fewer than 13 points (trial limits)."),
          )),
    Table("trends", "moopt.results", "indicator x organisation (series levels only)",
          "Change over time of every series: the modelled change per year and the recent-trend marker.", _cols(
              *SERIES_KEY,
              ("trend_points", "BIGINT", "Months in the model (24 or more)."),
              ("change_per_year", "DOUBLE", "Modelled relative change a year (quasi-Poisson GLM, robust SE)."),
              ("change_per_year_lower", "DOUBLE", "Lower 95% confidence limit of the change per year."),
              ("change_per_year_upper", "DOUBLE", "Upper 95% confidence limit of the change per year."),
              ("seasonal_terms", "BOOLEAN", "True when the model allows for the month of the year."),
              ("recent_trend", "VARCHAR", "Last five points, test for trend at 99.8% (non-seasonal indicators)."),
          )),
    Table("results_digests", "moopt.results", "indicator",
          "A digest of everything the results stage stored for each indicator, so that a page is rebuilt "
          "only when the results it shows change.", _cols(
              ("indicator_id", "VARCHAR", "Indicator id."),
              ("digest", "VARCHAR", "Order-independent hash of the indicator's rows in every result table."),
          )),
    Table("breakdown_results", "moopt.results", "indicator x organisation x period x breakdown",
          "Supplied indicators' breakdown groups (e.g. follow-up completed or not) with intervals.", _cols(
              *SERIES_KEY,
              ("org_name", "VARCHAR", "Organisation name."),
              *PERIOD_KEY,
              ("breakdown", "VARCHAR", "The group."),
              ("numerator", "DOUBLE", "Numerator of the group."),
              ("denominator", "DOUBLE", "Denominator of the group."),
              ("value", "DOUBLE", "numerator / denominator x multiplier."),
              *((f"{side}_{c}", "DOUBLE", f"{side.title()} {c.replace('_', '.')}% Wilson limit.")
                for c in CONFIDENCE_LEVELS for side in ("lower", "upper")),
          )),
)}


def table_contract_markdown() -> str:
    """``docs/tables.md``: every table, its writer, grain and columns."""
    lines = ["# The store's tables", "",
             "Generated from `src/moopt/tables.py` by `python -m moopt.tables > docs/tables.md`; do not edit "
             "by hand. The store is `outputs/store/moopt.duckdb` (DuckDB): open it read-only, e.g. "
             "`duckdb.connect('outputs/store/moopt.duckdb', read_only=True)`, and query these tables. "
             "The input tables written by ingest (`prescribing`, `list_size`, `organisations`, ...) are "
             "described in the README.", ""]
    for table in TABLES.values():
        lines += [f"## `{table.name}`", "",
                  f"{table.description} Written by `{table.written_by}`; one row per {table.grain}.", "",
                  "| column | type | unit | meaning |", "|---|---|---|---|"]
        lines += [f"| `{c.name}` | {c.type} | {c.unit} | {c.description} |" for c in table.columns]
        lines.append("")
    return "\n".join(lines)


def check_columns(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Raise when a stored table's columns differ from the contract (an internal error, not user input)."""
    actual = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
    expected = TABLES[name].column_names
    if actual != expected:
        missing = [c for c in expected if c not in actual]
        extra = [c for c in actual if c not in expected]
        raise RuntimeError(f"Table {name} does not match its contract in moopt.tables: "
                           f"missing {missing or 'none'}, unexpected {extra or 'none'}.")


# -- reading: every query a page makes -------------------------------------------------------------

@dataclass(frozen=True)
class RunFacts:
    period_start: date
    period_end: date
    window_start: date
    period_months: int
    org_level: str
    synthetic: bool
    practices_with_prescribing: int | None
    sub_icbs_with_prescribing: int | None
    whole_england: bool
    has_rolling: bool


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the store (or any DuckDB connection) holds a table of this name."""
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])


# What an indicator page shows of each organisation's row (ResultsReader.indicator_table).
INDICATOR_TABLE_COLUMNS = (
    "org_level", "org_code", "org_name", "period", "period_type", "value", "lower_95", "upper_95",
    "england_value", "lowest", "decile_10", "decile_50", "decile_90", "highest",
    "comparison_99_8", "assessment_99_8", "not_compared_reason")

_NATIONAL: dict = {}
_NATIONAL_SIZE = 512


class ResultsReader:
    """Read-only access to the results of the last build: the only queries pages make."""

    def __init__(self, con: duckdb.DuckDBPyConnection, store_identity: tuple | None = None):
        """``store_identity`` (path, size, modification time of the store file), when given, lets
        readers in one process share the national queries' results (see :meth:`national`)."""
        self.con = con
        self.store_identity = store_identity
        if not table_exists(con, "run_facts") or not table_exists(con, "indicator_results"):
            raise FileNotFoundError("The store holds no results of a build: run `moopt build` first.")

    def national(self, name: str, args: tuple, compute):
        """A query whose answer is the same for every page (all organisations of a level, funnel
        lines, deciles), asked once per process and store: a warm kernel that draws a hundred
        organisations' pages reads each indicator's national rows once. The store is identified
        by its path, size and modification time, so a rebuilt store is read again."""
        if self.store_identity is None:
            return compute()
        key = (self.store_identity, name, args)
        if key not in _NATIONAL:
            _NATIONAL[key] = compute()
            if len(_NATIONAL) > _NATIONAL_SIZE:
                _NATIONAL.pop(next(iter(_NATIONAL)))
        found = _NATIONAL[key]
        return found.copy() if hasattr(found, "copy") else found

    def frame(self, sql: str, params: list) -> pd.DataFrame:
        return self.con.execute(sql, params).fetchdf()

    def run_facts(self) -> RunFacts:
        names = [c for c in TABLES["run_facts"].column_names if c not in ("engine_key", "results_key", "engine_report")]
        row = self.con.execute(f"SELECT {', '.join(names)} FROM run_facts").fetchone()
        if row is None:
            raise FileNotFoundError("The store's run_facts table is empty: run `moopt build` first.")
        return RunFacts(*row)

    def first_org(self, org_level: str) -> str | None:
        return self.con.execute("SELECT min(org_code) FROM indicator_results WHERE org_level = ?",
                                [org_level]).fetchall()[0][0]

    def org_name(self, org_level: str, org_code: str) -> str | None:
        return self.con.execute("SELECT any_value(org_name) FROM indicator_results WHERE org_level = ? "
                                "AND org_code = ?", [org_level, org_code]).fetchall()[0][0]

    def n_peers(self, org_level: str, org_code: str) -> int:
        if not table_exists(self.con, "peer_groups"):
            return 0
        return self.con.execute("SELECT count(*) FROM peer_groups WHERE org_level = ? AND org_code = ?",
                                [org_level, org_code]).fetchall()[0][0]

    def latest_period(self, indicator_id: str, period_type: str, up_to) -> pd.Timestamp | None:
        value = self.national("latest_period", (indicator_id, period_type, str(up_to)), lambda: self.con.execute(
            "SELECT max(period) FROM indicator_results WHERE indicator_id = ? AND period_type = ? "
            "AND period <= ?", [indicator_id, period_type, up_to]).fetchall()[0][0])
        return pd.Timestamp(value) if value is not None else None

    def org_rows(self, indicator_id: str, org_level: str, org_code: str, up_to) -> pd.DataFrame:
        """One organisation's rows for an indicator, every period type, up to a period."""
        return self.frame(
            "SELECT * FROM indicator_results WHERE indicator_id = ? AND org_level = ? AND org_code = ? "
            "AND period <= ? ORDER BY period_type, period", [indicator_id, org_level, org_code, up_to])

    def level_rows(self, indicator_id: str, org_level: str, period, period_type: str,
                   parent_column: str | None = None, parent_code: str | None = None) -> pd.DataFrame:
        """Every organisation of a level in one period (optionally only the members of one parent)."""
        if parent_column is None:
            return self.national("level_rows", (indicator_id, org_level, str(period), period_type),
                                 lambda: self._level_rows(indicator_id, org_level, period, period_type))
        return self._level_rows(indicator_id, org_level, period, period_type, parent_column, parent_code)

    def _level_rows(self, indicator_id: str, org_level: str, period, period_type: str,
                    parent_column: str | None = None, parent_code: str | None = None) -> pd.DataFrame:
        where, params = "", [indicator_id, org_level, period, period_type]
        if parent_column is not None:
            if parent_column not in ("pcn_code", "sub_icb_code", "icb_code", "region_code", "group_code"):
                raise ValueError(f"Unknown parent column {parent_column!r}.")
            where, params = f" AND {parent_column} = ?", [*params, parent_code]
        return self.frame(
            "SELECT * FROM indicator_results WHERE indicator_id = ? AND org_level = ? AND period = ? "
            f"AND period_type = ?{where} ORDER BY org_code", params)

    def count_level_values(self, indicator_id: str, org_level: str, period, period_type: str) -> int:
        return self.national("count_level_values", (indicator_id, org_level, str(period), period_type),
                             lambda: self.con.execute(
            "SELECT count(value) FROM indicator_results WHERE indicator_id = ? AND org_level = ? AND period = ? "
            "AND period_type = ?", [indicator_id, org_level, period, period_type]).fetchall()[0][0])

    def level_series(self, indicator_id: str, org_level: str, period_type: str, up_to) -> pd.DataFrame:
        """One row per period of a level: its deciles (the same on every row of a period)."""
        deciles = ", ".join(f"any_value(decile_{d}) AS decile_{d}" for d in range(10, 100, 10))
        return self.frame(
            f"SELECT period, {deciles} FROM indicator_results WHERE indicator_id = ? AND org_level = ? "
            "AND period_type = ? AND period <= ? GROUP BY period ORDER BY period",
            [indicator_id, org_level, period_type, up_to])

    def funnel_parameters(self, indicator_id: str, org_level: str, period, period_type: str) -> pd.Series | None:
        rows = self.national("funnel_parameters", (indicator_id, org_level, str(period), period_type),
                             lambda: self.frame("SELECT * FROM funnel_parameters WHERE indicator_id = ? "
                                                "AND org_level = ? AND period = ? AND period_type = ?",
                                                [indicator_id, org_level, period, period_type]))
        return rows.iloc[0] if len(rows) else None

    def funnel_lines(self, indicator_id: str, org_level: str, period, period_type: str) -> pd.DataFrame:
        return self.national("funnel_lines", (indicator_id, org_level, str(period), period_type), lambda: self.frame(
            "SELECT denominator, lower_95, upper_95, lower_99_8, upper_99_8 FROM funnel_lines "
            "WHERE indicator_id = ? AND org_level = ? AND period = ? AND period_type = ? ORDER BY denominator",
            [indicator_id, org_level, period, period_type]))

    def spc_points(self, indicator_id: str, org_level: str, org_code: str, up_to) -> pd.DataFrame:
        return self.frame(
            "SELECT * FROM spc_points WHERE indicator_id = ? AND org_level = ? AND org_code = ? "
            "AND period <= ? ORDER BY period", [indicator_id, org_level, org_code, up_to])

    def trend(self, indicator_id: str, org_level: str, org_code: str) -> pd.Series | None:
        rows = self.frame("SELECT * FROM trends WHERE indicator_id = ? AND org_level = ? AND org_code = ?",
                          [indicator_id, org_level, org_code])
        return rows.iloc[0] if len(rows) else None

    def indicator_table(self, indicator_id: str, org_levels: list[str], period_type: str, up_to) -> pd.DataFrame:
        """Every organisation at ``org_levels`` for one indicator, in its latest period of
        ``period_type`` up to ``up_to`` (the period the organisation pages show), with its trend
        where there is one: one query for all of an indicator's pages.

        Columns: :data:`INDICATOR_TABLE_COLUMNS` of ``indicator_results`` plus ``trend_points``,
        ``change_per_year`` (and its limits) and ``recent_trend`` from ``trends`` (empty without a trend).
        """
        trend_columns = ("trend_points", "change_per_year", "change_per_year_lower", "change_per_year_upper",
                         "recent_trend")
        if table_exists(self.con, "trends"):
            joined = ("LEFT JOIN trends AS t ON t.indicator_id = r.indicator_id AND t.org_level = r.org_level "
                      "AND t.org_code = r.org_code")
            picked = ", ".join(f"t.{c}" for c in trend_columns)
        else:
            joined, picked = "", ", ".join(f"NULL AS {c}" for c in trend_columns)
        levels = ", ".join("?" for _ in org_levels) or "NULL"
        return self.frame(
            f"SELECT {', '.join('r.' + c for c in INDICATOR_TABLE_COLUMNS)}, {picked} "
            f"FROM indicator_results AS r {joined} "
            f"WHERE r.indicator_id = ? AND r.period_type = ? AND r.org_level IN ({levels}) AND r.period = "
            "(SELECT max(period) FROM indicator_results WHERE indicator_id = ? AND period_type = ? AND period <= ?) "
            "ORDER BY r.org_level, r.org_name, r.org_code",
            [indicator_id, period_type, *org_levels, indicator_id, period_type, up_to])

    def org_trends(self, org_level: str, org_code: str) -> pd.DataFrame:
        """Every indicator's trend row for one organisation (one query for a summary page)."""
        return self.frame("SELECT * FROM trends WHERE org_level = ? AND org_code = ? ORDER BY indicator_id",
                          [org_level, org_code])

    def org_latest_spc(self, org_level: str, org_code: str, up_to) -> pd.DataFrame:
        """Each indicator's latest SPC point for one organisation, up to a period."""
        return self.frame(
            "SELECT * FROM spc_points WHERE org_level = ? AND org_code = ? AND period <= ? "
            "QUALIFY row_number() OVER (PARTITION BY indicator_id ORDER BY period DESC, period_type) = 1 "
            "ORDER BY indicator_id", [org_level, org_code, up_to])

    def breakdowns(self, indicator_id: str, org_level: str, org_code: str, period, period_type: str) -> pd.DataFrame:
        return self.frame(
            "SELECT * FROM breakdown_results WHERE indicator_id = ? AND period = ? AND period_type = ? "
            "AND breakdown <> 'all' AND ((org_level = ? AND org_code = ?) OR org_level = 'england')",
            [indicator_id, period, period_type, org_level, org_code])

    def has_rows(self, period_type: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM indicator_results WHERE period_type = ?",
                                     [period_type]).fetchall()[0][0])


if __name__ == "__main__":  # python -m moopt.tables > docs/tables.md
    sys.stdout.write(table_contract_markdown())
