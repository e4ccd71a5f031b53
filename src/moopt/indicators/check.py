"""``moopt indicators check``: validate every definition and report coverage against the data.

For each indicator it lists the BNF codes in the store that its numerator and
(prescribing) denominator match. A code set that matches nothing, or a
percentage whose numerator matches rows its denominator does not (which would
let the value exceed 100%), is an error naming the indicator. For a part that
uses a lookup, the codes its code set matches but the lookup lacks (so the
engine does not count them) are listed too, with their items: they are a
warning to read, not an error (a list such as NHS England's recommended strips
leaves most products out on purpose). A *draft* definition whose code set
matches nothing is noted rather than failed: drafts may name presentations the
data do not hold yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import ibis

from moopt.indicators.definitions import DefinitionError, Indicator, load_indicators
from moopt.indicators.engine import code_set_predicate, lookup_match, lookup_where, with_lookups


@dataclass
class CoverageRow:
    indicator_id: str
    part: str  # "numerator", "denominator", "supplied rows", or "<part> not in lookup <name>"
    codes: list[str]
    items: int

    @property
    def is_lookup_gap(self) -> bool:
        return " not in lookup " in self.part

    @property
    def is_draft_gap(self) -> bool:
        return "(draft) matches no BNF code" in self.part


@dataclass
class CheckReport:
    indicators: list[Indicator] = field(default_factory=list)
    coverage: list[CoverageRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    store_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self) -> str:
        lines = [f"{len(self.indicators)} indicator definitions valid against the schema."]
        if not self.store_checked:
            lines.append("No data store found: coverage not checked (run `moopt build` or `moopt ingest`).")
        for row in self.coverage:
            shown = ", ".join(row.codes[:6]) + (f" and {len(row.codes) - 6} more" if len(row.codes) > 6 else "")
            if row.part == "supplied rows":
                lines.append(f"  {row.indicator_id} supplied: {row.items:,} rows")
                continue
            if row.is_draft_gap:
                lines.append(f"  NOTE {row.indicator_id} {row.part}")
                continue
            if row.is_lookup_gap:
                lines.append(f"  NOTE {row.indicator_id} {row.part}: {len(row.codes)} BNF codes, {row.items:,} items "
                             f"not counted ({shown})")
                continue
            lines.append(f"  {row.indicator_id} {row.part}: {len(row.codes)} BNF codes, "
                         f"{row.items:,} items ({shown or 'none'})")
        if self.errors:
            lines.append(f"{len(self.errors)} problem(s):")
            lines.extend(f"  ERROR {e}" for e in self.errors)
        else:
            lines.append("No problems found.")
        return "\n".join(lines)


def coverage(backend: ibis.BaseBackend, indicator: Indicator) -> tuple[list[CoverageRow], list[str]]:
    """Codes each part of ``indicator`` matches in the store, and any errors."""
    rx = backend.table("prescribing")
    rows, errors = [], []
    parts = [("numerator", indicator.numerator)]
    if indicator.denominator.type == "prescribing":
        parts.append(("denominator", indicator.denominator))
    lookups = sorted({comp.lookup.table for _, comp in parts if comp.lookup is not None})
    if lookups:
        rx = with_lookups(rx, lookups)
    predicates = {}
    for name, comp in parts:
        pred = code_set_predicate(rx, comp.code_set)
        if comp.lookup is not None:
            gap = rx.filter(pred & ~lookup_match(rx, comp.lookup)).group_by("bnf_code").aggregate(
                items=rx.items.sum()).to_pandas()
            if len(gap):
                rows.append(CoverageRow(indicator.id, f"{name} not in lookup {comp.lookup.table}",
                                        sorted(gap["bnf_code"].tolist()), int(gap["items"].sum())))
            matched_before_lookup = int(rx.filter(pred).count().execute())
            pred = pred & lookup_where(rx, comp.lookup)
        predicates[name] = pred
        hit = rx.filter(pred).group_by("bnf_code").aggregate(items=rx.items.sum()).to_pandas()
        codes = sorted(hit["bnf_code"].tolist())
        rows.append(CoverageRow(indicator.id, name, codes, int(hit["items"].sum()) if len(hit) else 0))
        if not codes:
            if comp.lookup is not None and matched_before_lookup:
                errors.append(f"{indicator.id}: the {name} code set {list(comp.code_set.codes)} matches "
                              f"{matched_before_lookup:,} prescribing rows, but none is counted by its lookup "
                              f"{comp.lookup.table!r} (see the NOTE lines).")
            elif indicator.status == "draft":
                # A draft may name presentations the data do not hold yet; it is said, not failed.
                rows.append(CoverageRow(indicator.id, f"{name} (draft) matches no BNF code in the data", [], 0))
            else:
                errors.append(f"{indicator.id}: the {name} code set {list(comp.code_set.codes)} matches no BNF "
                              "code in the data.")
    if indicator.value_kind == "proportion":
        outside = rx.filter(predicates["numerator"] & ~predicates["denominator"])
        n = int(outside.count().execute())
        if n:
            example = outside.select("bnf_code").limit(3).to_pandas()["bnf_code"].tolist()
            errors.append(f"{indicator.id}: {n:,} prescribing rows count in the numerator but not the "
                          f"denominator (e.g. {', '.join(example)}), so the percentage could exceed 100%.")
    return rows, errors


def check_indicators(store_path: Path | None = None, directory: Path | None = None) -> CheckReport:
    report = CheckReport()
    try:
        report.indicators = load_indicators(directory)
    except DefinitionError as exc:
        report.errors.append(str(exc))
        return report
    if store_path is None:
        return report
    import duckdb

    con = duckdb.connect(str(store_path), read_only=True)
    try:
        backend = ibis.duckdb.from_connection(con)
        report.store_checked = True
        supplied_counts = {}
        if any(i.is_supplied for i in report.indicators):
            try:
                sup = backend.table("supplied")
                counts = sup.group_by("indicator_id").aggregate(n=sup.count()).to_pandas()
                supplied_counts = dict(zip(counts["indicator_id"], counts["n"]))
            except Exception:  # noqa: BLE001 - no supplied table in this store
                supplied_counts = {}
        for ind in report.indicators:
            if ind.is_supplied:
                n = int(supplied_counts.get(ind.id, 0))
                report.coverage.append(CoverageRow(ind.id, "supplied rows", [], n))
                if not n:
                    report.errors.append(f"{ind.id}: no supplied rows in the store (load its file with the run's "
                                         "data.supplied files).")
                continue
            rows, errors = coverage(backend, ind)
            report.coverage.extend(rows)
            report.errors.extend(errors)
    finally:
        con.close()
    return report
