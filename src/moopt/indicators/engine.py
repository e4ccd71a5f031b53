"""The indicator engine: every definition, every organisation level, every month.

The engine turns the store's canonical tables into one tidy table,
``indicator_values``: indicator x organisation level x organisation x period
(month and rolling 12 months) -> numerator, denominator, value, England value,
percentile and national deciles.

It is written as Ibis expressions, not SQL strings or pandas loops, so the same
definitions run on any Ibis backend: DuckDB for the embedded store here, and a
cluster engine (PySpark) later, unchanged. Each step is materialised as a table
so that the backend computes shared work once.

Method (see also the methodology pages):

1. One pass over prescribing sums, per practice and month, every numerator and
   prescribing denominator: the chosen measure over rows whose BNF code matches
   the code set (prefix, optional strength suffix, exclusions, optional
   quantity-per-item threshold). A component that uses a packaged lookup
   (:mod:`moopt.indicators.lookups`) is left-joined to it in the same pass: only
   rows the lookup has (and, with ``where``, whose lookup class is one of those
   asked for) count, and the measure is multiplied and divided by the lookup's
   factors (e.g. quantity x strength / DDD), and optionally divided by one more
   on rows whose quantity per item is above a threshold (rows in doses rather
   than inhalers). Rows that match the code set but
   are missing from the lookup are not counted; their items are summed per
   indicator and reported (:attr:`EngineReport.lookup_unmatched_items`).
2. Population denominators per practice and month from list sizes: all
   patients, patients in an age range, and STAR-PU (patients in each age/sex band
   times the 2013 weight of the therapeutic group).
3. Organisation values are ratios of sums over member practices, never means
   of practice ratios. Practices whose population denominator is missing that
   month (no list size, or one the store set aside in practices_without_list_size)
   are left out of both sums at higher levels, and counted.
4. Rolling 12-month values sum numerators over 12 consecutive months; a
   prescribing denominator is summed, a population denominator is averaged (the
   STAR-PU of the mean list). Fewer than 12 months with data gives no value.
5. value = numerator / denominator x multiplier, null where the denominator is
   0 or missing.
6. Percentile (OpenPrescribing convention): within indicator, level, period and
   period type, among organisations with a value, (rank - 1) / (n - 1) x 100
   with ties at their lowest rank; organisations without a value have none.
   Deciles: the 10th to 90th percentiles of the values, linear interpolation; likewise the
   quartiles, with the lowest and highest value (the summary spine draws them).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from moopt.indicators.definitions import CodeSet, Component, Indicator, LookupUse
from moopt.indicators.lookups import Lookup, get_lookup, month_start
from moopt.indicators.denominators import quinary_weights
from moopt.orgs import ENGLAND_CODE, ENGLAND_NAME, GROUP_LEVEL, ORG_LEVEL_COLUMNS, ORG_LEVELS

log = logging.getLogger(__name__)

MAX_AGE = 200  # the upper end of an open band such as 95+
MEASURE_COLUMNS = {"items": "items", "quantity": "total_quantity", "adq": "adq_usage", "cost": "actual_cost"}
DECILES = tuple(range(10, 100, 10))
# The spread of a level in a period, on every row: deciles, then what the summary spine draws.
SPREAD_COLUMNS = (*(f"decile_{d}" for d in DECILES), "lowest", "quartile_25", "quartile_75", "highest")
HIERARCHY_PARENTS = ("pcn_code", "sub_icb_code", "icb_code", "region_code")
# A practice's row also names the run's own group it is in (see moopt.groupings), if any.
PARENT_COLUMNS = (*HIERARCHY_PARENTS, "group_code")
GROUPS_TABLE = "practice_groups"
RESULT_TABLE = "indicator_values"
# DuckDB adds doubles in whatever order its threads meet them, so a sum of doubles can differ
# in its last bits from one run to the next. Every sum is taken over decimals instead: each
# addend rounded to 12 decimal places, then added exactly, which gives the same total in any
# order (room for 26 digits before the point; stored numbers are below 1e15).
EXACT_SUM_TYPE = dt.Decimal(38, 12)


def exact_sum(values: ir.NumericValue, window=None) -> ir.FloatingValue:
    """The sum of ``values`` (over ``window``, if given) as a double, the same in any order of addition."""
    total = values.cast(EXACT_SUM_TYPE).sum()
    return (total if window is None else total.over(window)).cast("float64")


@dataclass
class EngineReport:
    indicators: int
    rows: int
    seconds: float
    practice_months_without_list_size: int
    months: list[str]
    # Items matched by a component's code set but missing from its lookup (so not counted):
    # indicator id -> {"numerator": items, "denominator": items}; only non-zero entries.
    lookup_unmatched_items: dict[str, dict[str, float]] = field(default_factory=dict)

    def lookup_lines(self) -> list[str]:
        """One line per indicator part with prescribing its lookup lacks."""
        return [f"{ind}: {items:,.0f} {part} items have BNF codes its lookup lacks and are not counted"
                for ind, parts in sorted(self.lookup_unmatched_items.items()) for part, items in parts.items()]


def _matches(code: ir.StringColumn, pattern: str) -> ir.BooleanColumn:
    prefix, suffix = CodeSet.split(pattern)
    expr = code.startswith(prefix)
    if suffix:
        expr = expr & code.endswith(suffix)
    return expr


def code_set_predicate(table: ir.Table, code_set: CodeSet, thresholds: bool = True) -> ir.BooleanColumn:
    """Boolean expression: does a prescribing row count towards ``code_set``?

    With ``thresholds=False`` the quantity-per-item conditions are left out: the rows that
    could count, whatever their quantity.
    """
    thresholds = dict(code_set.quantity_per_item_above) if thresholds else {}
    terms = []
    for pattern in code_set.codes:
        term = _matches(table.bnf_code, pattern)
        if pattern in thresholds:
            term = term & (table.quantity > thresholds[pattern])
        terms.append(term)
    predicate = terms[0]
    for term in terms[1:]:
        predicate = predicate | term
    for pattern in code_set.exclude:
        predicate = predicate & ~_matches(table.bnf_code, pattern)
    return predicate


def lookup_key_column(lookup: Lookup) -> str:
    return f"_lk_{lookup.name}__key"


def lookup_column(lookup: Lookup, column: str) -> str:
    return f"_lk_{lookup.name}__{column}"


def with_lookups(rx: ir.Table, names: list[str]) -> ir.Table:
    """``rx`` left-joined to each named lookup on the key the lookup is matched on.

    Adds ``_lk_<name>__key`` (null where the lookup lacks the row's code) and one column per
    lookup value column. A lookup's keys are unique (per month for a dated lookup), so the join
    never duplicates a prescribing row.
    """
    for name in names:
        lookup = get_lookup(name)
        frame = lookup.frame
        if lookup.key == "presentation":
            row_key = rx.bnf_code
            keys = frame["bnf_code"]
        elif lookup.key == "chemical":
            row_key = rx.bnf_code.substr(0, 9)
            keys = frame["bnf_code"]
        else:  # generic: chemical + the last two characters (the generic equivalent's strength and form)
            row_key = rx.bnf_code.substr(0, 9) + rx.bnf_code.right(2)
            keys = frame["bnf_code"].str[:9] + frame["bnf_code"].str[-2:]
        table = {lookup_key_column(lookup): keys.tolist()}
        for column in lookup.columns:
            try:
                table[lookup_column(lookup, column)] = lookup.numeric(column).tolist()
            except ValueError:  # a text column (a class); only the numeric ones can be factors
                table[lookup_column(lookup, column)] = frame[column].tolist()
        if lookup.dated:
            table["_lk_from"] = [month_start(date.fromisoformat(v)) for v in frame["valid_from"]]
            table["_lk_to"] = [month_start(date.fromisoformat(v)) if v else date.max for v in frame["valid_to"]]
        right = ibis.memtable(table)
        condition = [row_key == right[lookup_key_column(lookup)]]
        if lookup.dated:
            condition += [rx.month >= right["_lk_from"], rx.month <= right["_lk_to"]]
        joined = rx.left_join(right, condition)
        rx = joined.select(rx, *[joined[c] for c in table if not c.startswith("_lk_from")
                                 and not c.startswith("_lk_to")])
    return rx


def lookup_match(rx: ir.Table, use: LookupUse) -> ir.BooleanColumn:
    """Does the row's code appear in the lookup (this month, for a dated lookup)?"""
    return rx[lookup_key_column(get_lookup(use.table))].notnull()


def lookup_where(rx: ir.Table, use: LookupUse) -> ir.BooleanColumn:
    """The lookup's class filter (true where there is none)."""
    lookup = get_lookup(use.table)
    predicate = lookup_match(rx, use)
    for column, values in use.where:
        predicate = predicate & rx[lookup_column(lookup, column)].isin(list(values))
    return predicate


def lookup_value(rx: ir.Table, use: LookupUse, value: ir.FloatingColumn) -> ir.FloatingColumn:
    lookup = get_lookup(use.table)
    for column in use.multiply_by:
        value = value * rx[lookup_column(lookup, column)]
    for column in use.divide_by:
        value = value / rx[lookup_column(lookup, column)]
    if use.divide_if_quantity_per_item_above is not None:
        # Rows with a large quantity per item are in smaller units (e.g. doses, not inhalers).
        threshold, column = use.divide_if_quantity_per_item_above
        value = ibis.ifelse(rx.quantity > threshold, value / rx[lookup_column(lookup, column)], value)
    return value


def _component_key(component: Component) -> tuple:
    if component.type == "prescribing":
        if component.lookup is not None:
            return ("prescribing", component.measure, component.code_set, component.lookup)
        return ("prescribing", component.measure, component.code_set)
    if component.type == "list_size":
        return ("list_size", component.age_from, component.age_to)
    return ("star_pu", component.star_pu_group)


class IndicatorEngine:
    """Compute indicator values on an Ibis backend holding the store's tables."""

    def __init__(self, backend: ibis.BaseBackend, indicators: list[Indicator]):
        if not indicators:
            raise ValueError("No indicators to compute.")
        self.backend = backend
        self.indicators = [i for i in indicators if not i.is_supplied]
        self.supplied = [i for i in indicators if i.is_supplied]
        self._columns: dict[tuple, str] = {}
        for ind in self.indicators:
            for comp in (ind.numerator, ind.denominator):
                self._columns.setdefault(_component_key(comp), f"c{len(self._columns)}")
        self._lookups = sorted({key[3].table for key in self._columns if len(key) > 3})

    # -- step 1 and 2: practice x month sums ----------------------------------------------------------

    def _prescribing_sums(self, end_month) -> ir.Table:
        rx = self.backend.table("prescribing")
        if end_month is not None:
            rx = rx.filter(rx.month <= end_month)
        if self._lookups:
            rx = with_lookups(rx, self._lookups)
        sums = {}
        for key, name in self._columns.items():
            if key[0] != "prescribing":
                continue
            measure, code_set = key[1], key[2]
            use = key[3] if len(key) > 3 else None
            value = rx[MEASURE_COLUMNS[measure]].cast("float64")
            counts = code_set_predicate(rx, code_set)
            could_count = code_set_predicate(rx, code_set, thresholds=False)
            if use is not None:
                # Rows the lookup lacks are not counted here; their items are summed below for the report.
                sums[f"u{name}"] = exact_sum(ibis.ifelse(counts & ~lookup_match(rx, use),
                                                         rx["items"].cast("float64"), 0.0))
                counts = counts & lookup_where(rx, use)
                could_count = could_count & lookup_where(rx, use)
            total = exact_sum(ibis.ifelse(counts, value if use is None else lookup_value(rx, use, value), 0.0))
            # A row that could count but lacks what is summed or tested (legacy files have no ADQ
            # usage and may lack quantities) makes the sum unknown, not smaller.
            unknown = value.isnull()
            if code_set.quantity_per_item_above or (use is not None and use.divide_if_quantity_per_item_above):
                unknown = unknown | rx.quantity.isnull()
            unknown_rows = ibis.ifelse(could_count & unknown, 1, 0).sum()
            sums[name] = ibis.ifelse(unknown_rows > 0, ibis.null("float64"), total)
        return rx.group_by(["practice_code", "month"]).aggregate(**sums)

    def _population_sums(self, end_month) -> ir.Table:
        ls = self.backend.table("list_size")
        try:
            set_aside = self.backend.table("practices_without_list_size")
        except Exception:  # noqa: BLE001 - a store written before the table existed (ibis raises per backend)
            set_aside = None
        if set_aside is not None:
            # List sizes the store set aside (implausibly small for a practice that prescribes)
            # count as missing: that practice-month then takes the no-list-size path below.
            ls = ls.anti_join(set_aside, ["practice_code", "month"])
        if end_month is not None:
            ls = ls.filter(ls.month <= end_month)
        sums = {}
        groups = sorted({key[1] for key in self._columns if key[0] == "star_pu"})
        if groups:
            weights = quinary_weights(groups).pivot_table(
                index=["sex", "age_lower"], columns="star_pu_group", values="weight").reset_index()
            weights.columns = ["sex", "age_lower"] + [f"w_{g}" for g in weights.columns[2:]]
            weights["age_lower"] = weights["age_lower"].astype("int32")
            ls = ls.join(ibis.memtable(weights), ["sex", "age_lower"], how="left")
        patients = ls.patients.cast("float64")
        for key, name in self._columns.items():
            if key[0] == "list_size":
                _, age_from, age_to = key
                if age_from is None and age_to is None:
                    sums[name] = exact_sum(patients)
                    continue
                # A band counts when it lies inside the ages asked for. A band that straddles the
                # limits, or a count with no age (files of totals only), makes the count unknown.
                lower = ls.age_lower
                upper = ls.age_upper.fill_null(MAX_AGE)  # open-ended top band
                inside = lower.notnull()
                overlaps = ibis.literal(True)
                if age_from is not None:
                    inside = inside & (lower >= age_from)
                    overlaps = overlaps & (upper >= age_from)
                if age_to is not None:
                    inside = inside & (upper <= age_to)
                    overlaps = overlaps & (lower <= age_to)
                straddles = overlaps.fill_null(True) & ~inside.fill_null(False)  # no age: may overlap
                unknown = ibis.ifelse(straddles, 1, 0).sum()
                sums[name] = ibis.ifelse(unknown > 0, ibis.null("float64"),
                                         exact_sum(ibis.ifelse(inside, patients, 0.0)))
            elif key[0] == "star_pu":
                # Weights exist for every sex and age band; counts with no age or sex have none,
                # and make the weighted population unknown.
                weight = ls[f"w_{key[1]}"]
                unknown = ibis.ifelse(weight.isnull(), 1, 0).sum()
                sums[name] = ibis.ifelse(unknown > 0, ibis.null("float64"), exact_sum(patients * weight))
        if not sums:
            return None
        return ls.group_by(["practice_code", "month"]).aggregate(**sums)

    def practice_month_sums(self, end_month=None) -> ir.Table:
        """Wide table: practice_code, month and one column per distinct numerator or denominator."""
        base = self._prescribing_sums(end_month)
        pop = self._population_sums(end_month)
        if pop is not None:
            base = base.left_join(pop, ["practice_code", "month"]).select(
                base, *[pop[c] for c in pop.columns if c not in ("practice_code", "month")])
        return base

    def practice_month_long(self, end_month=None, sums: ir.Table | None = None) -> ir.Table:
        """Long table: indicator_id, practice_code, month, numerator, denominator, flags.

        ``sums`` is :meth:`practice_month_sums`, materialised by the caller; without it the
        long table is built over the unmaterialised expression.
        """
        base = self.practice_month_sums(end_month) if sums is None else sums
        parts = []
        for ind in self.indicators:
            num = self._columns[_component_key(ind.numerator)]
            den = self._columns[_component_key(ind.denominator)]
            unmatched = {}
            if self._lookups:  # only then: the long table of an engine without lookups is as before
                for part, column in (("numerator", num), ("denominator", den)):
                    unmatched[f"unmatched_{part}_items"] = (
                        base[f"u{column}"] if f"u{column}" in base.columns else ibis.literal(0.0, "float64"))
            parts.append(base.select(
                indicator_id=ibis.literal(ind.id, "string"),
                practice_code=base.practice_code,
                month=base.month,
                numerator=base[num].cast("float64"),
                denominator=base[den].cast("float64"),
                multiplier=ibis.literal(ind.multiplier, "float64"),
                population_denominator=ibis.literal(ind.denominator.is_population, "boolean"),
                **unmatched,
            ))
        return ibis.union(*parts)

    @staticmethod
    def unmatched_items(long: ir.Table) -> dict[str, dict[str, float]]:
        """Per indicator, items its code sets match but its lookups lack (non-zero parts only)."""
        if "unmatched_numerator_items" not in long.columns:
            return {}
        totals = long.group_by("indicator_id").aggregate(
            numerator=exact_sum(long.unmatched_numerator_items),
            denominator=exact_sum(long.unmatched_denominator_items)).to_pandas()
        found = {}
        for row in totals.itertuples(index=False):
            parts = {p: float(getattr(row, p)) for p in ("numerator", "denominator") if getattr(row, p) > 0}
            if parts:
                found[row.indicator_id] = parts
        return found

    # -- step 3: every organisation level --------------------------------------------------------------

    def organisations(self) -> ir.Table:
        """The organisations table with each practice's own group (``group_code``, ``group_name``).

        Both are null for a practice in no group, and for every practice when the store has no
        ``practice_groups`` table (a run without a groupings file).
        """
        orgs = self.backend.table("organisations")
        try:
            groups = self.backend.table(GROUPS_TABLE)
        except Exception:  # noqa: BLE001 - a store written before groupings existed (ibis raises per backend)
            return orgs.mutate(group_code=ibis.null("string"), group_name=ibis.null("string"))
        joined = orgs.left_join(groups, "practice_code")
        return joined.select(orgs, groups.group_code, groups.group_name)

    def has_groups(self) -> bool:
        try:
            return int(self.backend.table(GROUPS_TABLE).count().execute()) > 0
        except Exception:  # noqa: BLE001 - no table: no groups
            return False

    def level_months(self, practice_long: ir.Table) -> ir.Table:
        orgs = self.organisations()
        joined = practice_long.join(orgs, "practice_code")
        keys = ["indicator_id", "month", "multiplier", "population_denominator"]
        per_level = []
        levels = [*ORG_LEVELS, GROUP_LEVEL] if self.has_groups() else list(ORG_LEVELS)
        for level in levels:
            if level == "practice":
                t = joined
                code, name = t.practice_code, t.practice_name
                per_level.append(t.select(
                    *[t[k] for k in keys], org_level=ibis.literal(level), org_code=code, org_name=name,
                    numerator=t.numerator, denominator=t.denominator, n_practices=ibis.literal(1, "int64"),
                    **{p: t[p] for p in PARENT_COLUMNS}))
                continue
            # Above practice level, a practice counts (in numerator and denominator alike) only in
            # months it has the denominator. An organisation none of whose practices has one keeps
            # its row, with no value, rather than vanishing.
            t = joined.filter(joined.group_code.notnull()) if level == GROUP_LEVEL else joined
            sums = {
                "numerator": exact_sum(ibis.ifelse(t.denominator.notnull(), t.numerator, ibis.null("float64"))),
                "denominator": exact_sum(t.denominator),
                "n_practices": t.denominator.count(),
            }
            if level == "england":
                agg = t.group_by([t[k] for k in keys]).aggregate(**sums)
                agg = agg.mutate(org_level=ibis.literal(level), org_code=ibis.literal(ENGLAND_CODE),
                                 org_name=ibis.literal(ENGLAND_NAME))
            else:
                code_col, name_col = ORG_LEVEL_COLUMNS[level]
                # A group has no parent: its practices may be anywhere in the hierarchy.
                parents = HIERARCHY_PARENTS[HIERARCHY_PARENTS.index(code_col) + 1:] \
                    if code_col in HIERARCHY_PARENTS else ()
                agg = t.group_by([*keys, code_col]).aggregate(
                    org_name=t[name_col].max(), **sums, **{p: t[p].max() for p in parents})
                agg = agg.rename(org_code=code_col).mutate(org_level=ibis.literal(level))
            for p in PARENT_COLUMNS:
                if p not in agg.columns:
                    agg = agg.mutate(**{p: ibis.null("string")})
            per_level.append(agg.select(
                *keys, "org_level", "org_code", "org_name", "numerator", "denominator", "n_practices",
                *PARENT_COLUMNS))
        return ibis.union(*per_level)

    # -- supplied indicators: values from files, rolled up the hierarchy -------------------------------

    def supplied_levels(self) -> ir.Table | None:
        """Supplied rows (every breakdown) aggregated from the level they came at to every level above.

        Organisation values are again ratios of sums. Each indicator must be supplied at one level
        only, otherwise the same activity would be counted twice.
        """
        if not self.supplied:
            return None
        try:
            sup = self.backend.table("supplied")
        except Exception:  # noqa: BLE001 - a store without supplied data (ibis raises per backend)
            return None
        ids = [i.id for i in self.supplied]
        sup = sup.filter(sup.indicator_id.isin(ids))
        levels = sup.group_by("indicator_id").aggregate(n=sup.org_level.nunique()).to_pandas()
        several = levels.loc[levels["n"] > 1, "indicator_id"].tolist()
        if several:
            raise ValueError(f"Supplied indicator(s) {', '.join(several)} have rows at more than one "
                             "organisation level; supply each at one level (it is rolled up from there).")
        if levels.empty:
            return None
        multipliers = ibis.memtable(
            {"indicator_id": ids, "multiplier": [float(i.multiplier) for i in self.supplied]})
        sup = sup.join(multipliers, "indicator_id")
        orgs = self.organisations()
        groups = self.has_groups()
        keys = ["indicator_id", "period", "period_type", "breakdown", "multiplier"]
        chain = [lvl for lvl in ORG_LEVELS if lvl != "england"]
        parts = []
        for i, source in enumerate(chain):
            code_col = ORG_LEVEL_COLUMNS[source][0]
            # Only practice-level supplied rows can be summed into the run's own groups.
            own_groups = [GROUP_LEVEL] if groups and source == "practice" else []
            above = [c for lvl in [*chain[i:], *own_groups] for c in ORG_LEVEL_COLUMNS[lvl]]
            mapping = orgs.group_by(code_col).aggregate(
                **{c: orgs[c].max() for c in above if c != code_col})
            rows = sup.filter(sup.org_level == source)
            joined = rows.join(mapping, rows.org_code == mapping[code_col]).select(
                rows, *[mapping[c] for c in above if c != code_col])
            joined = joined.mutate(**{code_col: joined.org_code})
            for target in [*chain[i:], "england", *own_groups]:
                t = joined.filter(joined.group_code.notnull()) if target == GROUP_LEVEL else joined
                sums = {"numerator": exact_sum(t.numerator), "denominator": exact_sum(t.denominator),
                        "n_practices": t.org_code.count()}
                if target == "england":
                    agg = t.group_by([t[k] for k in keys]).aggregate(**sums).mutate(
                        org_level=ibis.literal("england"), org_code=ibis.literal(ENGLAND_CODE),
                        org_name=ibis.literal(ENGLAND_NAME))
                else:
                    tcode, tname = ORG_LEVEL_COLUMNS[target]
                    if tcode in HIERARCHY_PARENTS:
                        parents = HIERARCHY_PARENTS[HIERARCHY_PARENTS.index(tcode) + 1:]
                    elif target == GROUP_LEVEL:
                        parents = ()
                    else:  # practice rows name every parent there is (their group only when grouped)
                        parents = [p for p in PARENT_COLUMNS if p in t.columns]
                    name_expr = t[tname].max() if tname in t.columns else t[tcode].max()
                    agg = t.group_by([*keys, tcode]).aggregate(
                        org_name=name_expr, **sums, **{p: t[p].max() for p in parents})
                    agg = agg.rename(org_code=tcode).mutate(org_level=ibis.literal(target))
                for p in PARENT_COLUMNS:
                    if p not in agg.columns:
                        agg = agg.mutate(**{p: ibis.null("string")})
                parts.append(agg.select(
                    "indicator_id", "org_level", "org_code", "org_name", "multiplier", "n_practices",
                    *PARENT_COLUMNS, "period", "period_type", "breakdown", "numerator", "denominator"))
        both = ibis.union(*parts)
        return both.mutate(value=ibis.ifelse(
            both.denominator > 0, both.numerator / both.denominator * both.multiplier, ibis.null("float64")))

    # -- steps 4 to 6 -----------------------------------------------------------------------------------

    def with_rolling(self, monthly: ir.Table) -> ir.Table:
        m = monthly.mutate(month_index=monthly.month.year() * 12 + monthly.month.month())
        w = ibis.window(group_by=["indicator_id", "org_level", "org_code"], order_by=m.month_index,
                        range=(-11, 0))
        rolled = m.mutate(
            num_12=exact_sum(m.numerator, w),
            den_sum_12=exact_sum(m.denominator, w),
            # an exact sum over the count, for the same reason (DuckDB's avg adds doubles)
            den_mean_12=exact_sum(m.denominator, w) / m.denominator.count().over(w),
            months_12=m.month.count().over(w),
            den_months_12=m.denominator.count().over(w),
            num_months_12=m.numerator.count().over(w),
        )
        # A month with an unknown numerator or denominator breaks every window that holds it
        # (counting it as 0 would understate the 12-month value).
        complete = (rolled.months_12 == 12) & (rolled.den_months_12 == 12) & (rolled.num_months_12 == 12)
        rolling = rolled.filter(complete).select(
            "indicator_id", "org_level", "org_code", "org_name", "multiplier", "n_practices",
            *PARENT_COLUMNS,
            period=rolled.month, period_type=ibis.literal("rolling_12m"),
            numerator=rolled.num_12,
            denominator=ibis.ifelse(rolled.population_denominator, rolled.den_mean_12, rolled.den_sum_12),
        )
        month = monthly.select(
            "indicator_id", "org_level", "org_code", "org_name", "multiplier", "n_practices",
            *PARENT_COLUMNS, period=monthly.month, period_type=ibis.literal("month"),
            numerator=monthly.numerator, denominator=monthly.denominator)
        both = ibis.union(month, rolling)
        return both.mutate(value=ibis.ifelse(
            both.denominator > 0, both.numerator / both.denominator * both.multiplier, ibis.null("float64")))

    @staticmethod
    def benchmarked(values: ir.Table) -> ir.Table:
        """Every row with England's value, its percentile and its level's spread in its period.

        The percentile ranks and the spread (deciles, quartiles, range) are computed on a
        narrow table of keys and values and materialised (``_ranks``, ``_spread`` on the
        values' own backend) before being joined back: as one query over the wide table,
        its windows and quantiles held every column in memory and ran out of it at national
        scale under the build's DuckDB memory limit.
        """
        backend = values.get_backend()
        part = ["indicator_id", "org_level", "period", "period_type"]
        keys = [*part, "org_code"]
        narrow = values.select(*keys, "value")
        w = ibis.window(group_by=part, order_by=narrow.value)
        n = narrow.value.count().over(ibis.window(group_by=part))
        rank0 = ibis.rank().over(w)
        ranks = backend.create_table("_ranks", narrow.mutate(percentile=ibis.ifelse(
            narrow.value.notnull() & (n > 1) & (narrow.org_level != "england"),
            rank0.cast("float64") / (n - 1).cast("float64") * 100.0, ibis.null("float64"))).drop("value"),
            overwrite=True)
        valued = narrow.filter(narrow.value.notnull() & (narrow.org_level != "england"))
        spread = backend.create_table("_spread", valued.group_by(part).aggregate(
            **{f"decile_{d}": valued.value.quantile(d / 100) for d in DECILES},
            lowest=valued.value.min(), quartile_25=valued.value.quantile(0.25),
            quartile_75=valued.value.quantile(0.75), highest=valued.value.max()), overwrite=True)
        england = values.filter(values.org_level == "england").select(
            "indicator_id", "period", "period_type", england_value=values.value)
        t = values.left_join(england, ["indicator_id", "period", "period_type"]).select(
            values, england_value=england.england_value)
        t = t.left_join(ranks, keys).select(t, ranks.percentile)
        return t.left_join(spread, part).select(t, *[spread[c] for c in SPREAD_COLUMNS])

    # -- the whole thing ---------------------------------------------------------------------------------

    def run(self, end_month=None, start_month=None, table_name: str = RESULT_TABLE,
            progress=None) -> EngineReport:
        """Compute every indicator and write ``table_name`` to the backend; return a report."""
        say = progress or (lambda msg: None)
        started = time.perf_counter()
        values, missing_count, unmatched = None, 0, {}
        if self.indicators:
            # Materialised first: the long table reads it once per indicator, and a backend that
            # inlines common table expressions (Spark) would otherwise scan prescribing each time.
            sums = self.backend.create_table("_practice_month_sums", self.practice_month_sums(end_month),
                                             overwrite=True)
            long = self.backend.create_table("_practice_month_long",
                                             self.practice_month_long(sums=sums), overwrite=True)
            say(f"practice x month sums for {len(self.indicators)} indicators "
                f"[{time.perf_counter() - started:.1f}s]")
            missing = long.filter(long.population_denominator & long.denominator.isnull())
            missing_count = int(missing.select("practice_code", "month").distinct().count().execute())
            unmatched = self.unmatched_items(long)
            for line in EngineReport(0, 0, 0.0, 0, [], unmatched).lookup_lines():
                say(f"note: {line}")
            monthly = self.backend.create_table("_level_months", self.level_months(long), overwrite=True)
            say(f"aggregated to {len(ORG_LEVELS) + self.has_groups()} organisation levels [{time.perf_counter() - started:.1f}s]")
            values = self.with_rolling(monthly)
        supplied = self.supplied_levels()
        if supplied is not None:
            breakdowns = self.backend.create_table("supplied_breakdowns", supplied, overwrite=True)
            supplied_all = breakdowns.filter(breakdowns.breakdown == "all").drop("breakdown")
            values = supplied_all if values is None else ibis.union(values, supplied_all)
            say(f"supplied indicators rolled up for {len(self.supplied)} definitions "
                f"[{time.perf_counter() - started:.1f}s]")
        if values is None:
            raise ValueError("There is nothing to compute: no prescribing indicators and no supplied data.")
        values = self.backend.create_table("_values", values, overwrite=True)
        result = self.benchmarked(values)
        if start_month is not None:
            result = result.filter(result.period >= start_month)
        result = result.order_by(["indicator_id", "org_level", "org_code", "period_type", "period"])
        final = self.backend.create_table(table_name, result, overwrite=True)
        for scratch in ("_practice_month_sums", "_practice_month_long", "_level_months", "_values", "_ranks",
                        "_spread"):
            self.backend.drop_table(scratch, force=True)
        months = sorted({str(p)[:7] for p in final.select("period").distinct().to_pandas()["period"]})
        rows = int(final.count().execute())
        say(f"{rows:,} indicator values written to {table_name} [{time.perf_counter() - started:.1f}s]")
        return EngineReport(len(self.indicators) + len(self.supplied), rows, time.perf_counter() - started,
                            missing_count, months, unmatched)


def proportion_overflow(backend: ibis.BaseBackend, indicators: list[Indicator],
                        table_name: str = RESULT_TABLE) -> dict[str, int]:
    """Rows where a percentage exceeds 100 (numerator outside its denominator), per indicator."""
    t = backend.table(table_name)
    ids = [i.id for i in indicators if i.value_kind == "proportion"]
    if not ids:
        return {}
    bad = t.filter(t.indicator_id.isin(ids) & (t.numerator > t.denominator))
    counts = bad.group_by("indicator_id").aggregate(n=bad.count()).to_pandas()
    return dict(zip(counts["indicator_id"], counts["n"].astype(int)))
