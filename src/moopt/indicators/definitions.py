"""Load and validate indicator definitions.

Each indicator is one YAML file in ``definitions/``: the single source for
the engine, the notebook text, chart labels and the methodology page. Files
are validated against ``definition.schema.json`` when loaded, then checked
for the things a schema cannot say (STAR-PU group exists, thresholds name
their codes, a proportion's numerator is the same measure as its
denominator).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import fastjsonschema
import yaml

from moopt.indicators.denominators import star_pu_groups
from moopt.indicators.lookups import LookupFileError, get_lookup

DEFINITIONS_DIR = Path(__file__).with_name("definitions")
THEMES_FILE = Path(__file__).with_name("themes.yml")
SCHEMA_FILE = Path(__file__).with_name("definition.schema.json")

MEASURE_LABELS = {
    "items": "prescription items",
    "quantity": "quantity",
    "adq": "average daily quantities (ADQs)",
    "cost": "actual cost (£)",
}


class DefinitionError(ValueError):
    """An indicator definition is invalid."""


@dataclass(frozen=True)
class CodeSet:
    """BNF code patterns: prefixes, or ``prefix*suffix`` to also match the code's last characters."""

    codes: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    quantity_per_item_above: tuple[tuple[str, float], ...] = ()

    @staticmethod
    def split(pattern: str) -> tuple[str, str]:
        prefix, _, suffix = pattern.partition("*")
        return prefix, suffix

    def matches(self, bnf_code: str, quantity: float | None = None) -> bool:
        """Pure-Python reference of the engine's predicate (used by tests and the checker)."""

        def hit(pattern: str) -> bool:
            prefix, suffix = self.split(pattern)
            return bnf_code.startswith(prefix) and bnf_code.endswith(suffix)

        if any(hit(p) for p in self.exclude):
            return False
        thresholds = dict(self.quantity_per_item_above)
        return any(
            hit(pattern) and (pattern not in thresholds
                              or (quantity is not None and quantity > thresholds[pattern]))
            for pattern in self.codes)


@dataclass(frozen=True)
class LookupUse:
    """How a prescribing component uses a packaged lookup (see :mod:`moopt.indicators.lookups`).

    Only rows whose BNF code the lookup has (in that month, for a dated lookup) count; the
    measure is multiplied by the ``multiply_by`` columns and divided by the ``divide_by``
    columns; ``where`` keeps rows whose lookup column has one of the listed values.
    ``divide_if_quantity_per_item_above`` (threshold, column) also divides the measure by
    ``column`` on rows whose quantity per item exceeds the threshold: rows recorded in smaller
    units than the rest (e.g. inhaler doses rather than inhalers) are brought to the same unit.
    """

    table: str
    multiply_by: tuple[str, ...] = ()
    divide_by: tuple[str, ...] = ()
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()
    divide_if_quantity_per_item_above: tuple[float, str] | None = None

    @property
    def scales(self) -> bool:
        """Whether the measure is converted (so it is no longer a count of items or quantity)."""
        return bool(self.multiply_by or self.divide_by or self.divide_if_quantity_per_item_above)

    def formula(self, measure: str) -> str:
        """The sum in words, e.g. ``quantity x strength_mg_per_unit / ddd_mg``."""
        text = " x ".join([measure, *self.multiply_by])
        text += "".join(f" / {c}" for c in self.divide_by)
        if self.divide_if_quantity_per_item_above is not None:
            threshold, column = self.divide_if_quantity_per_item_above
            text += f", divided by {column} on rows whose quantity per item is above {threshold:g}"
        return text


@dataclass(frozen=True)
class Component:
    """A numerator or denominator."""

    type: str  # "prescribing", "list_size" or "star_pu"
    description: str
    measure: str | None = None
    code_set: CodeSet | None = None
    star_pu_group: str | None = None
    age_from: int | None = None
    age_to: int | None = None
    lookup: LookupUse | None = None

    @property
    def is_population(self) -> bool:
        return self.type in ("list_size", "star_pu")


@dataclass(frozen=True)
class Indicator:
    """One indicator definition (see ``definition.schema.json`` for every field)."""

    id: str
    title: str
    short_title: str
    theme: str
    status: str
    description: str
    why_it_matters: str
    numerator: Component
    denominator: Component
    multiplier: float
    unit: str
    improvement_direction: str
    source: str
    caveats: tuple[str, ...]
    authored_by: str
    checked_by: str
    date_reviewed: str
    next_review: str
    seasonal: bool = False
    value_decimals: int = 2
    national_expectation: str | None = None
    references: tuple[str, ...] = ()
    supplied: dict | None = None
    reference_line: dict | None = None  # value, label, source
    national_priority: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def value_kind(self) -> str:
        """What kind of statistic the value is; it decides the interval method.

        ``proportion`` (Wilson), ``rate`` (a count per population: exact Poisson/Byar),
        ``ratio`` (a count per STAR-PU, read as observed/expected), or ``none`` for
        ADQs, quantities and costs, which are not counts.
        """
        if self.supplied is not None:
            return self.supplied["value_kind"]
        num = self.numerator.measure
        if any(c.lookup is not None and c.lookup.scales for c in (self.numerator, self.denominator)):
            return "none"  # OMEs, DDDs, kg CO2e: not counts
        if self.denominator.type == "prescribing":
            return "proportion" if num == self.denominator.measure else "none"
        if num != "items":
            return "none"
        return "rate" if self.denominator.type == "list_size" else "ratio"

    @property
    def is_percentage(self) -> bool:
        return self.value_kind == "proportion" and self.multiplier == 100

    @property
    def is_cost_based(self) -> bool:
        return self.numerator.measure == "cost"

    @property
    def is_supplied(self) -> bool:
        return self.supplied is not None

    @property
    def main_period_type(self) -> str:
        """The period the site compares on: 12-month rolling for prescribing, as supplied otherwise."""
        return self.supplied["period_type"] if self.supplied else "rolling_12m"


@dataclass(frozen=True)
class Theme:
    id: str
    title: str
    description: str
    notebook: str
    order: int


@lru_cache(maxsize=1)
def _validator():
    # fastjsonschema compiles the schema to Python once; it imports in milliseconds, which
    # matters because every notebook loads the definitions.
    return fastjsonschema.compile(json.loads(SCHEMA_FILE.read_text()))


def _code_set(spec: dict) -> CodeSet:
    return CodeSet(
        codes=tuple(spec["codes"]),
        exclude=tuple(spec.get("exclude", [])),
        quantity_per_item_above=tuple(sorted(spec.get("quantity_per_item_above", {}).items())),
    )


def _conditional_divide(spec: dict) -> tuple[float, str] | None:
    rule = spec.get("divide_if_quantity_per_item_above")
    return None if rule is None else (float(rule["threshold"]), rule["column"])


def _lookup_use(spec: dict | None, ident: str, part: str) -> LookupUse | None:
    """The component's lookup, checked against the lookup file (columns exist, numbers are numbers)."""
    if spec is None:
        return None
    use = LookupUse(table=spec["table"], multiply_by=tuple(spec.get("multiply_by", [])),
                    divide_by=tuple(spec.get("divide_by", [])),
                    where=tuple(sorted((k, tuple(v)) for k, v in spec.get("where", {}).items())),
                    divide_if_quantity_per_item_above=_conditional_divide(spec))
    try:
        lookup = get_lookup(use.table)
        conditional = (use.divide_if_quantity_per_item_above[1],) if use.divide_if_quantity_per_item_above else ()
        for column in (*use.multiply_by, *use.divide_by, *conditional):
            lookup.numeric(column)
        for column, wanted in use.where:
            if column not in lookup.columns:
                raise LookupFileError(f"{lookup.path.name} has no column {column!r} "
                                      f"(value columns: {', '.join(lookup.columns)}).")
            absent = sorted(set(wanted) - set(lookup.frame[column]))
            if absent:
                raise LookupFileError(f"{lookup.path.name} column {column} never has the value(s) {absent}.")
    except LookupFileError as exc:
        raise DefinitionError(f"{ident}: the {part} lookup {use.table!r}: {exc}") from exc
    return use


def parse_definition(data: Any, source: str = "<definition>") -> Indicator:
    """Validate one definition (already parsed from YAML) and return an Indicator."""
    if not isinstance(data, dict):
        raise DefinitionError(f"{source}: a definition must be a mapping of fields.")
    # YAML reads bare dates as date objects; the schema wants ISO strings.
    data = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in data.items()}
    try:
        _validator()(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        where = exc.name.removeprefix("data").lstrip(".") or "(top level)"
        message = exc.message.replace(exc.name, where)
        raise DefinitionError(f"{source} ({data.get('id', '?')}) is not a valid definition: {where}: "
                              f"{message}") from exc
    ident = data["id"]
    num_spec = data["numerator"]
    thresholds = num_spec.get("quantity_per_item_above", {})
    unknown = set(thresholds) - set(num_spec.get("codes", []))
    if unknown:
        raise DefinitionError(f"{ident}: quantity_per_item_above names {sorted(unknown)}, which are not numerator codes.")
    den_spec = data["denominator"]
    if den_spec["type"] == "star_pu" and den_spec["star_pu_group"] not in star_pu_groups():
        raise DefinitionError(
            f"{ident}: STAR-PU group {den_spec['star_pu_group']!r} is not one of the 2013 groups: "
            f"{', '.join(star_pu_groups())}."
        )
    if data["date_reviewed"] > data["next_review"]:
        raise DefinitionError(f"{ident}: next_review is before date_reviewed.")
    supplied = data.get("supplied")
    is_supplied = num_spec.get("type") == "supplied"
    if is_supplied != (den_spec["type"] == "supplied") or is_supplied != (supplied is not None):
        raise DefinitionError(f"{ident}: a supplied indicator needs a supplied numerator, a supplied denominator "
                              "and a 'supplied' section; a prescribing indicator has none of them.")
    if supplied is not None:
        layout = supplied["source_layout"]
        if (layout == "qof_achievement") != bool(supplied.get("qof_indicator_codes")):
            raise DefinitionError(f"{ident}: qof_indicator_codes are needed for, and only for, source_layout "
                                  "qof_achievement.")
        numerator = Component("supplied", num_spec["description"])
        denominator = Component("supplied", den_spec["description"])
    else:
        numerator = Component("prescribing", num_spec["description"], num_spec["measure"], _code_set(num_spec),
                              lookup=_lookup_use(num_spec.get("lookup"), ident, "numerator"))
        if den_spec["type"] == "prescribing":
            denominator = Component("prescribing", den_spec["description"], den_spec["measure"],
                                    _code_set(den_spec),
                                    lookup=_lookup_use(den_spec.get("lookup"), ident, "denominator"))
        elif den_spec["type"] == "list_size":
            denominator = Component("list_size", den_spec["description"],
                                    age_from=den_spec.get("age_from"), age_to=den_spec.get("age_to"))
        else:
            denominator = Component("star_pu", den_spec["description"], star_pu_group=den_spec["star_pu_group"])
    indicator = Indicator(
        id=ident, title=data["title"], short_title=data["short_title"], theme=data["theme"],
        status=data["status"], description=data["description"].strip(),
        why_it_matters=data["why_it_matters"].strip(), numerator=numerator, denominator=denominator,
        multiplier=float(data["multiplier"]), unit=data["unit"],
        improvement_direction=data["improvement_direction"], source=data["source"],
        caveats=tuple(data["caveats"]), authored_by=data["authored_by"], checked_by=data["checked_by"],
        date_reviewed=data["date_reviewed"], next_review=data["next_review"],
        seasonal=bool(data.get("seasonal", False)), value_decimals=int(data.get("value_decimals", 2)),
        national_expectation=data.get("national_expectation"),
        references=tuple(data.get("references", [])), supplied=supplied,
        reference_line=data.get("reference_line"), national_priority=data.get("national_priority"), raw=data,
    )
    if indicator.value_kind == "proportion" and indicator.multiplier != 100:
        raise DefinitionError(f"{ident}: a proportion must use multiplier 100 (a percentage).")
    return indicator


def load_definition_file(path: Path) -> Indicator:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{path}: not valid YAML ({exc}).") from exc
    indicator = parse_definition(data, str(path))
    if Path(path).stem != indicator.id:
        raise DefinitionError(f"{path}: the file name must be the indicator id ({indicator.id}.yml).")
    return indicator


@lru_cache(maxsize=4)
def _load_all(directory: str) -> tuple[Indicator, ...]:
    paths = sorted(Path(directory).glob("*.yml"))
    if not paths:
        raise DefinitionError(f"No indicator definitions found in {directory}.")
    indicators = tuple(load_definition_file(p) for p in paths)
    themes = {t.id for t in load_themes()}
    for ind in indicators:
        if ind.theme not in themes:
            raise DefinitionError(f"{ind.id}: theme {ind.theme!r} is not listed in {THEMES_FILE.name}.")
    return indicators


def load_indicators(directory: str | Path | None = None, ids: list[str] | None = None) -> list[Indicator]:
    """All indicator definitions (optionally only ``ids``), validated, in id order."""
    indicators = list(_load_all(str(directory or DEFINITIONS_DIR)))
    if ids is not None:
        known = {i.id for i in indicators}
        missing = [i for i in ids if i not in known]
        if missing:
            raise DefinitionError(f"Unknown indicator(s): {', '.join(missing)}. Known: {', '.join(sorted(known))}.")
        indicators = [i for i in indicators if i.id in ids]
    return indicators


def get_indicator(indicator_id: str) -> Indicator:
    return load_indicators(ids=[indicator_id])[0]


@lru_cache(maxsize=1)
def load_themes() -> tuple[Theme, ...]:
    """Themes in display order, from ``themes.yml``."""
    data = yaml.safe_load(THEMES_FILE.read_text())
    themes = tuple(
        Theme(id=t["id"], title=t["title"], description=t["description"].strip(),
              notebook=t["notebook"], order=i)
        for i, t in enumerate(data["themes"])
    )
    return themes


def built_themes(indicators: list[Indicator] | None = None) -> list[Theme]:
    """Themes that have at least one indicator definition and a notebook."""
    indicators = indicators if indicators is not None else load_indicators()
    used = {i.theme for i in indicators}
    return [t for t in load_themes() if t.id in used]


def indicators_for_theme(theme_id: str) -> list[Indicator]:
    return [i for i in load_indicators() if i.theme == theme_id]
