"""Methodology pages generated from the indicator definitions.

Nothing is written twice: each page is made from the same YAML definition
the engine computes from and the notebooks label their charts with. Pages
are Markdown files under ``outputs/pages/methodology/`` that the site
builder renders with the rest of the site.
"""

from __future__ import annotations

import html
from pathlib import Path

from moopt.atomic import write_text_atomic
from moopt.indicators.definitions import MEASURE_LABELS, Component, Indicator, load_indicators, load_themes
from moopt.indicators.lookups import KEY_KINDS, Lookup, get_lookup, load_lookups

KEY_TEXT = {
    "presentation": "the full BNF presentation code",
    "chemical": "the BNF chemical code (first 9 characters), so every presentation of the chemical",
    "generic": "the chemical and the last two characters of the BNF code, so a generic presentation and its "
               "brand equivalents",
}
assert set(KEY_TEXT) == set(KEY_KINDS)

DIRECTION_TEXT = {
    "decrease": "Lower values are generally preferable (improvement direction: decrease).",
    "increase": "Higher values are generally preferable (improvement direction: increase).",
    "neutral": "No direction is preferred (improvement direction: neutral); the value describes variation.",
}
INTERVAL_TEXT = {
    "proportion": "Wilson score intervals (a proportion of items).",
    "rate": "Exact Poisson intervals for fewer than 10 items, Byar's method from 10 (a count per population).",
    "ratio": "The count interval of the items (exact Poisson below 10, Byar from 10) divided by the STAR-PU "
             "(observed over expected).",
    "none": "None: ADQs, quantities and costs are not counts, so percentiles and overdispersion-adjusted funnel "
            "limits are used instead.",
}


def _text(value: str) -> str:
    """Definition text for Markdown: HTML-escaped so stray angle brackets stay text."""
    return html.escape(" ".join(str(value).split()), quote=False)


def _codes(component: Component) -> list[str]:
    lines = []
    cs = component.code_set
    thresholds = dict(cs.quantity_per_item_above)
    for pattern in cs.codes:
        prefix, _, suffix = pattern.partition("*")
        text = f"`{prefix}`" + (f" with strength suffix `{suffix}`" if suffix else "")
        if pattern in thresholds:
            text += f", only where the quantity per item is more than {thresholds[pattern]:g}"
        lines.append(f"- {text}")
    for pattern in cs.exclude:
        lines.append(f"- excluding `{pattern.replace('*', '...')}`")
    return lines


def _lookup_use(component: Component) -> list[str]:
    use = component.lookup
    lookup = get_lookup(use.table)
    text = (f"Only rows whose code is in the lookup table *{_text(lookup.title)}* (`{lookup.path.name}`, "
            "listed with its sources on the lookup tables page) count "
            f"(matched on {KEY_TEXT[lookup.key]})")
    if use.where:
        text += ", where " + " and ".join(f"{column} is {' or '.join(values)}" for column, values in use.where)
    text += "."
    if use.scales:
        text += f" Each row adds {use.formula(component.measure)}."
    text += (" Rows the code set matches but the lookup lacks are not counted; `moopt indicators check` and the "
             "build report list them.")
    return [text, ""]


def lookups_page(lookups: dict[str, Lookup] | None = None) -> str:
    """Every packaged lookup with its key, columns, sources and dates."""
    lookups = lookups if lookups is not None else load_lookups()
    lines = ["# Lookup tables", "",
             "Some indicators need facts the prescribing data do not hold: a strength, a defined daily dose, a "
             "carbon footprint, a class. moopt ships them as versioned CSV files in the package "
             "(`moopt/indicators/lookups/`), each row with its source and date, checked when loaded.", ""]
    for name, lookup in sorted(lookups.items()):
        lines += [f"## {_text(lookup.title)}", "",
                  _text(lookup.description), "",
                  f"- File: `{lookup.path.name}` ({len(lookup.frame)} rows), matched on {KEY_TEXT[lookup.key]}.",
                  f"- Columns: {', '.join(f'`{c}`' for c in lookup.columns)}"
                  + ("; each row applies from the month of `valid_from` to the month of `valid_to`."
                     if lookup.dated else "."),
                  *[f"- Source ({_text(when)}): {_text(source)}" for source, when in lookup.sources()], ""]
    return "\n".join(lines)


def _component(title: str, component: Component) -> list[str]:
    lines = [f"### {title}", "", _text(component.description), ""]
    if component.type == "supplied":
        lines += ["Supplied from outside the prescribing data (see the source below).", ""]
    elif component.type == "prescribing":
        lines += [f"Measure: {MEASURE_LABELS[component.measure]}. BNF codes (prefixes):", "", *_codes(component), ""]
        if component.lookup is not None:
            lines += _lookup_use(component)
    elif component.type == "list_size":
        band = ""
        if component.age_from is not None or component.age_to is not None:
            band = f" aged {component.age_from or 0} to {component.age_to if component.age_to else 'any age'}"
        lines += [f"Registered patients{band}, from NHS Digital list sizes for the same month "
                  "(the average over the 12 months for a 12-month value).", ""]
    else:
        lines += [f"STAR-PU: the sum over age and sex bands of registered patients times the 2013 "
                  f"`{component.star_pu_group}` weight for the band (the average list over the 12 months for a "
                  "12-month value).", ""]
    return lines


def indicator_page(ind: Indicator, theme_title: str) -> str:
    lines = [
        f"# {ind.id}: {_text(ind.title)}", "",
        f"**Theme:** {_text(theme_title)} · **Status:** {ind.status} · **Unit:** {_text(ind.unit)}", "",
        *([f"**National priority:** {_text(ind.national_priority)}", ""] if ind.national_priority else []),
        "## What it measures", "", _text(ind.description), "",
        "## Why it matters", "", _text(ind.why_it_matters), "",
        "## How it is calculated", "",
        f"Value = numerator ÷ denominator × {ind.multiplier:g}, for each organisation as the sum of its members' "
        "numerators over the sum of their denominators (never an average of member values). "
        + ("Monthly values and 12-month rolling values are both calculated." if not ind.is_supplied else
           f"Supplied {ind.supplied['period_type'].replace('rolling_12m', '12-month').replace('_', ' ')} values "
           f"from {'QOF achievement files' if ind.supplied['source_layout'] == 'qof_achievement' else 'tidy supplied files'}"
           + (f" (QOF indicator {', '.join(ind.supplied['qof_indicator_codes'])})"
              if ind.supplied.get('qof_indicator_codes') else "")
           + ", rolled up from the level they are supplied at."), "",
        *_component("Numerator", ind.numerator),
        *_component("Denominator", ind.denominator),
        "## Reading the value", "",
        DIRECTION_TEXT[ind.improvement_direction], "",
    ]
    if ind.national_expectation:
        lines += [f"National expectation: {_text(ind.national_expectation)}", ""]
    if ind.reference_line:
        ref = ind.reference_line
        lines += [f"Reference line on the charts: {ref['value']:g} ({_text(ref['label'])}). Source: "
                  f"{_text(ref['source'])}.", ""]
    lines += [f"Confidence intervals: {INTERVAL_TEXT[ind.value_kind]}", "",
              f"Seasonal: {'yes: compare 12-month values, or seasonally adjusted monthly values' if ind.seasonal else 'no'}.", ""]
    lines += ["## Caveats", "", *[f"- {_text(c)}" for c in ind.caveats], ""]
    lines += ["## Source and review", "", f"- Source: {_text(ind.source)}"]
    lines += [f"- Reference: {_text(r)}" for r in ind.references]
    lines += [f"- Authored by: {_text(ind.authored_by)}", f"- Checked by: {_text(ind.checked_by)}",
              f"- Date reviewed: {ind.date_reviewed}", f"- Next review: {ind.next_review}", ""]
    return "\n".join(lines)


def methods_page() -> str:
    return "\n".join([
        "# How moopt calculates and compares", "",
        "## Data", "",
        "Prescribing comes from the English Prescribing Dataset (one row per practice, month, BNF presentation "
        "and quantity per item); registered patients from NHS Digital's quinary age and sex list sizes; the "
        "practice to PCN, sub-ICB location, ICB and region mapping from NHS Digital's practice mapping file. "
        "Every file is validated when it is loaded: rows that fail are kept aside with the reason, and each run "
        "reports rows read, accepted and rejected.", "",
        "## Organisations", "",
        "Values are calculated for practices, primary care networks, sub-ICB locations, ICBs, regions and England. "
        "An organisation's value is the sum of its practices' numerators divided by the sum of their denominators. "
        "A practice without a list size in a month is left out of both sums for population-based indicators that "
        "month.", "",
        "## Periods", "",
        "Monthly values, and 12-month rolling values ending in each month: numerators summed over the 12 months; "
        "prescribing denominators summed; population denominators averaged (the STAR-PU of the average list).", "",
        "## Percentiles and deciles", "",
        "Within each indicator, organisation level and period, organisations with a value are ranked: percentile = "
        "(rank − 1) ÷ (number of organisations − 1) × 100, ties taking the lowest rank. National deciles are the "
        "10th to 90th percentiles of the values, by linear interpolation. This follows OpenPrescribing.", "",
        "## Reading the charts", "",
        "- **Trend**: the organisation (solid blue line with markers) against the national deciles (dotted grey), "
        "the national median (dashed black) and England (dash-dot). Half of organisations lie between the 25th "
        "and 75th percentiles; the deciles show how wide the spread is.",
        "- **Position among peers**: every organisation at the same level in the latest 12 months, ranked, with "
        "this organisation marked by shape, colour and a label, and England as a reference line.",
        "- **Practices**: the organisation's practices by value and by size of denominator. Small practices vary "
        "more by chance, so a funnel shape is expected; the three most extreme practices are labelled.", "",
        "- **Funnel plot**: every organisation at the same level by value and size of denominator, with 95% and "
        "99.8% limits around England. The limits include Spiegelhalter's additive overdispersion adjustment "
        "(the between-organisation variance tau² is estimated from Winsorised z-scores), because prescribing "
        "varies far more than chance alone would make it; without it almost every organisation would look "
        "unusual.",
        "- **Practices**: the organisation's practices on a funnel whose limits are set by every practice in England.",
        "- **SPC chart** (NHS Making Data Count): monthly values with their mean and process limits (mean ± 2.66 × "
        "mean moving range). Special-cause points (outside the limits, a run of 7 on one side of the mean, a trend "
        "of 7, or 2 of 3 near a limit) are marked by shape and colour. Seasonal indicators (antibiotics) are "
        "seasonally adjusted first (STL, period 12), because seasonality would otherwise trigger the rules; "
        "12-month rolling values are never used for SPC. Fewer than 13 points give trial limits.",
        "- **Spine chart** (summary page): one row per indicator, England at the centre, the bar showing the range "
        "across organisations with the middle half shaded; the marker's shape, colour and text give the "
        "comparison with England. Rows where lower is better are mirrored so that better is always to the right.",
        "",
        "Every chart has alt text, a caption and a CSV download of exactly what it plots.", "",
        "## Confidence intervals", "",
        "Proportions use Wilson score intervals; counts per population use exact Poisson limits below 10 "
        "items and Byar's method from 10; items per STAR-PU (observed/expected) use the count limits divided by "
        "the STAR-PU. ADQs, quantities and costs are not counts and get no interval. The intervals say how "
        "precisely a value is known; they are not used to compare organisations with England.", "",
        "## The comparison with England: one verdict", "",
        "Every organisation, indicator and period gets one comparison with England, and the theme page's text, "
        "its funnel plot, the 'at a glance' table and the summary page all show that same verdict. It is the "
        "organisation's position in the funnel of all organisations at its level in that period:", "",
        "1. The funnel is centred on England's value. Each organisation's value is put on a variance-stabilising "
        "scale (arcsine square root for proportions; square root of observed/expected for counts per "
        "population and per STAR-PU) and turned into a z-score.",
        "2. Prescribing varies between organisations far more than chance explains, so the z-scores are "
        "Winsorised at the 10th and 90th percentiles and the overdispersion factor phi is their mean square. "
        "When phi shows more variation than chance, the between-organisation variance tau² is estimated and "
        "added to each organisation's own variance (Spiegelhalter's additive random-effects model), widening "
        "the limits; otherwise the limits are the exact binomial or interpolated Poisson limits around England.",
        "3. Above the 99.8% limit is **higher**, below it **lower**, otherwise **similar** than England; the "
        "indicator's preferred direction turns higher/lower into better/worse (or leaves it higher/lower when "
        "no direction is preferred). The 95% position is shown too.",
        "4. There is no verdict (and the page says why) for England itself, without a value or an England value, "
        "when fewer than 3 organisations at the level have a value, and for ADQs and costs when the funnel has "
        "no limits for them.", "",
        "Without the overdispersion adjustment almost every sub-ICB location would be 'significantly different' "
        "from England, because its denominators are large; the adjusted funnel asks instead whether it is "
        "unusual among organisations like it. References: Spiegelhalter DJ (2005), Funnel plots for comparing "
        "institutional performance, Statistics in Medicine 24:1185-1202; Spiegelhalter DJ (2005), Handling "
        "over-dispersion of performance indicators, Quality and Safety in Health Care 14:347-351; NHS-R "
        "Community, FunnelPlotR.", "",
        "## Similar organisations (peers)", "",
        "Each organisation's peer group is the 10 organisations of the same level nearest to it on list size, "
        "share of patients aged 65 and over and deprivation score (each standardised to mean 0 and standard "
        "deviation 1 within the level; Euclidean distance). The peer value is the ratio of the peers' summed "
        "numerators to their summed denominators; the organisation is never part of its own peer group. It is "
        "shown as a figure for context, not as a second verdict.", "",
        "## Trends", "",
        "The change per year is exp(12β) − 1 from a quasi-Poisson regression of the monthly numerator with "
        "log(denominator) as offset and month-of-year terms for seasonal indicators, with "
        "heteroscedasticity- and autocorrelation-consistent standard errors. For non-seasonal indicators the "
        "last five months also get a chi-squared test for trend at 99.8%.", "",
        "## Cost-saving opportunity", "",
        "For cost-based indicators: what the organisation would have spent over 12 months had its value been at "
        "the 10th percentile (or median) of organisations at its level, priced at its own costs. This shows the "
        "scale of variation, not a target.", "",
        "## What the comparisons mean", "",
        "The dashboard describes variation to start local discussion. It sets no targets and is not a league "
        "table. Prescribing data are overdispersed: with large denominators almost every difference is "
        "statistically significant, so a statistical difference is not necessarily an important one.", "",
    ])


def write_methodology(out: Path, indicators: list[Indicator] | None = None) -> list[dict]:
    """Write the methodology pages under ``out/pages/methodology``; return manifest entries."""
    indicators = indicators if indicators is not None else load_indicators()
    themes = {t.id: t.title for t in load_themes()}
    folder = Path(out) / "pages" / "methodology"
    folder.mkdir(parents=True, exist_ok=True)
    pages = [("methods.md", "How values are calculated and compared", methods_page()),
             ("lookups.md", "Lookup tables and their sources", lookups_page())]
    pages += [(f"{ind.id}.md", f"{ind.id}: {ind.short_title}", indicator_page(ind, themes.get(ind.theme, ind.theme)))
              for ind in indicators]
    entries = []
    for name, title, text in pages:
        write_text_atomic(folder / name, text)
        entries.append({"path": f"methodology/{name}", "title": title, "section": "Methodology"})
    return entries
