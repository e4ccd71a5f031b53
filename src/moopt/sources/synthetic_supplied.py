"""Synthetic supplied-indicator files: the data moopt does not compute from prescribing.

Some medicines optimisation indicators come from other published or local data (EPS
utilisation, repeat dispensing, community pharmacy services, Yellow Card reports, hospital
discharge referrals, care-home medication reviews, compliance-aid assessments, QOF). This
module writes made-up versions of them for the synthetic organisations, so that the whole
suite can be built and tested without real data:

* moopt tidy files (``supplied/<source>.csv``) with the header
  ``INDICATOR_ID,ORG_LEVEL,ORG_CODE,PERIOD_START,PERIOD_END,BREAKDOWN,NUMERATOR,DENOMINATOR``,
  one file per source, quarterly, at practice level (COM01 to COM05) or sub-ICB level (SAF10,
  TOC01 to TOC03, VUL01, ADH01);
* NHS Digital QOF achievement files (``supplied/ACHIEVEMENT_<yy><yy>.csv``,
  ``PRACTICE_CODE,INDICATOR_CODE,MEASURE,VALUE``), one per financial year, with the codes moopt
  maps to CVD10 (AF007 or AF008, by year) and DIA10 (DM020) and two codes it must ignore.

Values are drawn around plausible national levels, with persistent organisation effects
(log-normal for rates, normal on the logit scale for proportions) so that organisations differ
by more than chance, plus period-to-period noise and slow national trends. Counts are Poisson
or binomial given those expectations. Everything comes from ``seed``: the same inputs give
byte-identical files. None of it is real data.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from moopt.atomic import write_csv_atomic
import pyarrow.csv as pacsv
import pyarrow.compute as pc

__all__ = [
    "QOF_COLUMNS",
    "QOF_IGNORED_CODES",
    "QOF_INDICATOR_CODES",
    "QOF_MEASURES",
    "SUPPLIED_COLUMNS",
    "SUPPLIED_SOURCES",
    "generate_supplied",
]

SUPPLIED_COLUMNS: tuple[str, ...] = (
    "INDICATOR_ID", "ORG_LEVEL", "ORG_CODE", "PERIOD_START", "PERIOD_END", "BREAKDOWN",
    "NUMERATOR", "DENOMINATOR",
)  # fmt: skip

QOF_COLUMNS: tuple[str, ...] = ("PRACTICE_CODE", "INDICATOR_CODE", "MEASURE", "VALUE")
QOF_MEASURES: tuple[str, ...] = ("ACHIEVED_POINTS", "REGISTER", "NUMERATOR", "DENOMINATOR", "PCAS")

# Tidy file name (without .csv) -> (organisation level, indicators it holds).
SUPPLIED_SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "eps_utilisation": ("practice", ("COM01", "COM02")),
    "repeat_dispensing": ("practice", ("COM03", "COM04")),
    "new_medicine_service": ("practice", ("COM05",)),
    "yellow_card_reports": ("sub_icb", ("SAF10",)),
    "transfer_of_care": ("sub_icb", ("TOC01", "TOC02", "TOC03")),
    "care_home_medication_reviews": ("sub_icb", ("VUL01",)),
    "compliance_aid_assessments": ("sub_icb", ("ADH01",)),
}

# QOF indicator code -> moopt indicator id; the ignored codes are in the files but unused.
# AF anticoagulation was AF007 until 2022/23 and AF008 (a DOAC, or a vitamin K antagonist where a
# DOAC is declined or unsuitable) from 2023/24; a year's file holds one of the two.
QOF_INDICATOR_CODES: dict[str, str] = {"AF007": "CVD10", "AF008": "CVD10", "DM020": "DIA10"}
QOF_IGNORED_CODES: tuple[str, ...] = ("HYP008", "AST007")
_AF008_FIRST_YEAR_END = 2024  # 2023/24, the first financial year with AF008

REQUIRED_ORG_COLUMNS = ("PRACTICE_CODE", "SUB_ICB_LOCATION_CODE")

_MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_REFERENCE_MONTH = 2025 * 12 + 2  # March 2025: national trends are expressed in years from here

# One random stream per part of the model, so that changing one part leaves the others alone.
_STREAMS = {
    "population": 1, "care_homes": 2, "eps": 3, "repeat_dispensing": 4, "nms": 5,
    "yellow_card": 6, "transfer_of_care": 7, "care_home_reviews": 8, "compliance_aids": 9,
    "qof_practice": 10, "qof_year": 11,
}  # fmt: skip

# QOF model per code: register prevalence (share of the whole list), share of the register the
# indicator applies to, personalised care adjustment rate, national achievement, and points
# (maximum, lower and upper achievement thresholds). Illustrative values, not the official ones.
_QOF_MODEL = {
    "AF": dict(prevalence=0.021, eligible=0.86, pca=0.07, achievement=0.885, points=(12, 0.40, 0.70)),
    "DM020": dict(prevalence=0.065, eligible=0.80, pca=0.12, achievement=0.63, points=(17, 0.35, 0.52)),
    "HYP008": dict(prevalence=0.140, eligible=0.82, pca=0.08, achievement=0.70, points=(14, 0.40, 0.77)),
    "AST007": dict(prevalence=0.065, eligible=0.95, pca=0.10, achievement=0.60, points=(20, 0.45, 0.70)),
}


# --------------------------------------------------------------------------------------------
# Input checks and periods
# --------------------------------------------------------------------------------------------


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"The seed must be a non-negative integer, not {seed!r}.")
    return int(seed)


def _month_indices(months: Sequence[str]) -> np.ndarray:
    """``"YYYY-MM"`` labels -> year * 12 + month - 1, checked to be consecutive."""
    if isinstance(months, str) or not isinstance(months, Sequence) or len(months) == 0:
        raise ValueError("months must be a non-empty list of 'YYYY-MM' strings, e.g. ['2024-10', '2024-11'].")
    indices = []
    for label in months:
        match = _MONTH_RE.match(label) if isinstance(label, str) else None
        if not match:
            raise ValueError(f"Each month must look like '2026-09' (YYYY-MM), not {label!r}.")
        indices.append(int(match.group(1)) * 12 + int(match.group(2)) - 1)
    result = np.asarray(indices)
    if len(result) > 1 and np.any(np.diff(result) != 1):
        raise ValueError("months must be consecutive and in order, with no gaps or repeats.")
    return result


def _label(month_index: int) -> str:
    return f"{month_index // 12}-{month_index % 12 + 1:02d}"


def _period_bounds(end_indices: np.ndarray, length: int) -> tuple[list[str], list[str]]:
    """ISO first day of the first month and last day of the last month of each period."""
    starts = pd.PeriodIndex([_label(i - length + 1) for i in end_indices], freq="M")
    ends = pd.PeriodIndex([_label(i) for i in end_indices], freq="M")
    return ([p.start_time.strftime("%Y-%m-%d") for p in starts],
            [p.end_time.strftime("%Y-%m-%d") for p in ends])


def _period_ends(month_idx: np.ndarray, last_month_of_period: set[int]) -> np.ndarray:
    """Periods (by the index of their last month) that end within the months given.

    When none does, the latest period ending before the last month is used, so there is always
    at least one.
    """
    ends = month_idx[np.isin(month_idx % 12, sorted(last_month_of_period))]
    if len(ends) == 0:
        candidate = int(month_idx[-1])
        while candidate % 12 not in last_month_of_period:
            candidate -= 1
        ends = np.array([candidate])
    return ends


def _check_organisations(organisations: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(organisations, pd.DataFrame):
        raise ValueError("organisations must be a pandas DataFrame read from gp-reg-pat-prac-map.csv.")
    missing = [c for c in REQUIRED_ORG_COLUMNS if c not in organisations.columns]
    if missing:
        raise ValueError(f"organisations lacks the column(s) {', '.join(missing)}; pass the practice map "
                         "(gp-reg-pat-prac-map.csv) as written by moopt's synthetic generator.")
    orgs = pd.DataFrame({
        "practice_code": organisations["PRACTICE_CODE"].astype("str").str.strip().str.upper(),
        "sub_icb_code": organisations["SUB_ICB_LOCATION_CODE"].astype("str").str.strip().str.upper(),
    })
    if orgs.empty:
        raise ValueError("organisations has no practices.")
    blank = orgs["practice_code"].isin(["", "NAN"]) | orgs["sub_icb_code"].isin(["", "NAN"])
    if blank.any():
        raise ValueError(f"organisations has {int(blank.sum())} row(s) with a blank practice or sub-ICB code.")
    duplicated = orgs["practice_code"].duplicated()
    if duplicated.any():
        raise ValueError("organisations lists practice(s) more than once: "
                         f"{', '.join(orgs.loc[duplicated, 'practice_code'].head(5))}.")
    # Sorted, so that the output does not depend on the row order of the map.
    return orgs.sort_values("practice_code", ignore_index=True)


# --------------------------------------------------------------------------------------------
# Random helpers
# --------------------------------------------------------------------------------------------


def _rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream]])


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def _poisson_gamma(rng: np.random.Generator, mean: np.ndarray, shape: float) -> np.ndarray:
    """Negative binomial counts with the given mean: extra-Poisson noise of CV 1/sqrt(shape)."""
    mean = np.asarray(mean, dtype=float)
    return rng.poisson(mean * rng.gamma(shape, 1.0 / shape, size=mean.shape)).astype(np.int64)


def _binomial(rng: np.random.Generator, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    return rng.binomial(np.asarray(n, dtype=np.int64), np.clip(p, 0.0, 1.0)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Populations: the synthetic list sizes and care-home beds when present, drawn otherwise
# --------------------------------------------------------------------------------------------


def _read_list_size_month(path: Path) -> pd.Series:
    """Registered patients per practice (all ages, both sexes) from one quinary list-size file."""
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        include_columns=["ORG_TYPE", "ORG_CODE", "SEX", "AGE_GROUP_5", "NUMBER_OF_PATIENTS"],
        column_types={"ORG_CODE": "string", "SEX": "string", "AGE_GROUP_5": "string", "ORG_TYPE": "string"}))
    keep = pc.and_(pc.and_(pc.equal(table["SEX"], "ALL"), pc.equal(table["AGE_GROUP_5"], "ALL")),
                   pc.equal(table["ORG_TYPE"], "GP"))
    table = table.filter(keep)
    return pd.Series(table["NUMBER_OF_PATIENTS"].to_numpy(zero_copy_only=False).astype(float),
                     index=table["ORG_CODE"].to_pylist())


def _populations(out_dir: Path, practices: pd.Series, month_indices: np.ndarray,
                 seed: int) -> tuple[np.ndarray, str]:
    """Registered patients, shape (practices, months), and where they came from.

    The synthetic generator's list-size files in ``out_dir/list_sizes`` are used when they exist
    (a month without a file takes the nearest month that has one), so that rates per patient
    agree with the prescribing data; practices or sets without them get a drawn list size.
    """
    rng = _rng(seed, "population")
    n = len(practices)
    # Drawn fallback: log-normal around England's median list (~8,000) with ~1% growth a year.
    baseline = np.clip(np.round(8000 * np.exp(0.55 * rng.standard_normal(n))), 800, None)
    years = (month_indices - _REFERENCE_MONTH) / 12.0
    drawn = np.round(baseline[:, None] * (1.0 + 0.01 * years)[None, :])

    available = {}
    for path in sorted((out_dir / "list_sizes").glob("*_[0-9][0-9][0-9][0-9][0-9][0-9].csv")):
        stem_month = path.stem[-6:]
        available[int(stem_month[:4]) * 12 + int(stem_month[4:]) - 1] = path
    if not available:
        return drawn, "drawn"
    known = np.array(sorted(available))
    result = drawn.copy()
    covered = np.zeros(n, dtype=bool)
    cache: dict[int, pd.Series] = {}
    for j, month in enumerate(month_indices):
        nearest = int(known[np.argmin(np.abs(known - month))])
        if nearest not in cache:
            cache[nearest] = _read_list_size_month(available[nearest])
        counts = cache[nearest].reindex(practices.to_numpy()).to_numpy()
        found = ~np.isnan(counts)
        result[found, j] = counts[found]
        covered |= found
    source = "list_sizes" if covered.all() else ("mixed" if covered.any() else "drawn")
    return result, source


def _care_home_beds(out_dir: Path, practices: pd.Series, populations: np.ndarray, seed: int) -> np.ndarray:
    """Care-home beds linked to each practice: the synthetic attributes file, or drawn."""
    rng = _rng(seed, "care_homes")
    n = len(practices)
    # Drawn fallback: about a third of practices have no care-home patients; the rest average
    # ~9 beds per 1,000 patients, so England has ~6 per 1,000 (about 370,000 beds).
    drawn = np.where(rng.random(n) < 0.35, 0.0,
                     np.round(populations.mean(axis=1) * 0.009 * rng.lognormal(-0.3, 0.8, n)))
    path = out_dir / "organisations" / "practice_attributes.csv"
    if not path.exists():
        return drawn
    attributes = pd.read_csv(path, dtype={"PRACTICE_CODE": "str"})
    if "CARE_HOME_BEDS" not in attributes.columns:
        return drawn
    beds = attributes.set_index("PRACTICE_CODE")["CARE_HOME_BEDS"].reindex(practices.to_numpy()).to_numpy(float)
    return np.where(np.isnan(beds), drawn, beds)


# --------------------------------------------------------------------------------------------
# Indicator models. Arrays are (organisations, quarters).
# --------------------------------------------------------------------------------------------


def _community_support(rng_eps, rng_rd, rng_nms, pop: np.ndarray, sub_icb_index: np.ndarray,
                       n_sub_icbs: int, years: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    n, q = pop.shape
    # Items: ~1.6 a patient a month in England (about 1.2 billion a year for 63 million patients).
    items_per_patient = 1.6 * rng_eps.lognormal(0.0, 0.12, n)
    items = _poisson_gamma(rng_eps, 3 * pop * items_per_patient[:, None], shape=400.0)

    # EPS enabled: nearly every practice before the window; a few switch on during it or later.
    enabled_from = np.where(rng_eps.random(n) < 0.97, -1, rng_eps.integers(0, q + 4, n))
    enabled = np.arange(q)[None, :] >= enabled_from[:, None]
    # EPS share ~95.5% nationally, rising slowly; a few (dispensing) practices send far fewer.
    sub_effect = rng_eps.normal(0.0, 0.2, n_sub_icbs)[sub_icb_index]
    low_users = np.where(rng_eps.random(n) < 0.02, -2.5, 0.0)
    logit_eps = (_logit(0.955) + 0.12 * years[None, :] + rng_eps.normal(0.0, 0.45, n)[:, None]
                 + sub_effect[:, None] + low_users[:, None] + rng_eps.normal(0.0, 0.1, (n, q)))
    eps_items = np.where(enabled, _binomial(rng_eps, items, _expit(logit_eps)), 0)

    # Electronic repeat dispensing: a modest and very variable share of EPS items (median ~13%);
    # paper repeat dispensing adds a little from the non-EPS items.
    sub_rd = rng_rd.normal(0.0, 0.3, n_sub_icbs)[sub_icb_index]
    logit_erd = (_logit(0.13) + 0.08 * years[None, :] + rng_rd.normal(0.0, 0.85, n)[:, None]
                 + sub_rd[:, None] + rng_rd.normal(0.0, 0.08, (n, q)))
    erd_items = _binomial(rng_rd, eps_items, _expit(logit_erd))
    paper_rd_items = _binomial(rng_rd, items - eps_items, np.full((n, q), 0.05))

    # New Medicine Service: ~7 interventions per 1,000 patients a quarter, growing ~7% a year.
    sub_nms = rng_nms.lognormal(0.0, 0.2, n_sub_icbs)[sub_icb_index]
    nms_rate = 7.0 * np.exp(0.07 * years)[None, :] * (rng_nms.lognormal(0.0, 0.45, n) * sub_nms)[:, None]
    nms = _poisson_gamma(rng_nms, pop / 1000.0 * nms_rate, shape=50.0)

    ones = np.ones((n, q), dtype=np.int64)
    return {
        "COM01": (eps_items, items),
        "COM02": (enabled.astype(np.int64), ones),
        "COM03": (erd_items + paper_rd_items, items),
        "COM04": (erd_items, eps_items),
        "COM05": (nms, pop.astype(np.int64)),
    }


def _yellow_card(rng, pop: np.ndarray, years: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    n, q = pop.shape
    # ~13 reports per 100,000 population a quarter, varying widely with local reporting culture.
    rate = 13.0 * np.exp(-0.02 * years)[None, :] * rng.lognormal(0.0, 0.35, n)[:, None]
    reports = _poisson_gamma(rng, pop / 100_000.0 * rate, shape=30.0)
    return {"SAF10": (reports, pop.astype(np.int64))}


def _transfer_of_care(rng, pop: np.ndarray, years: np.ndarray) -> tuple[dict, dict]:
    """TOC01-TOC03 'all' values and the TOC03 breakdown by community pharmacy follow-up."""
    n, q = pop.shape
    discharges = _poisson_gamma(rng, pop * 0.028 * rng.lognormal(0.0, 0.15, n)[:, None], shape=200.0)
    # Referrals at discharge: ~45 per 1,000 discharges, growing, and very uneven between areas.
    referral_rate = 45.0 * np.exp(0.15 * years)[None, :] * rng.lognormal(0.0, 0.6, n)[:, None]
    referrals = np.minimum(_poisson_gamma(rng, discharges * referral_rate / 1000.0, shape=40.0), discharges)
    # Many referrals are never completed (the BMJ Open evaluation found under a third were); here
    # about 45%, rising as services mature.
    logit_done = (_logit(0.45) + 0.1 * years[None, :] + rng.normal(0.0, 0.5, n)[:, None]
                  + rng.normal(0.0, 0.1, (n, q)))
    completed = _binomial(rng, referrals, _expit(logit_done))
    not_completed = referrals - completed
    # 30-day readmission: ~10% after a completed follow-up and ~16% without one, as the
    # observational BMJ Open study found; areas share an effect so both move together.
    area = rng.normal(0.0, 0.2, n)[:, None]
    readmit_completed = _binomial(rng, completed, _expit(_logit(0.10) + area + rng.normal(0.0, 0.08, (n, q))))
    readmit_not = _binomial(rng, not_completed, _expit(_logit(0.16) + area + rng.normal(0.0, 0.08, (n, q))))
    values = {
        "TOC01": (referrals, discharges),
        "TOC02": (completed, referrals),
        "TOC03": (readmit_completed + readmit_not, referrals),
    }
    breakdowns = {"TOC03": {"completed": (readmit_completed, completed),
                            "not_completed": (readmit_not, not_completed)}}
    return values, breakdowns


def _care_home_reviews(rng, beds: np.ndarray, q: int, years: np.ndarray) -> dict:
    n = len(beds)
    residents = _binomial(rng, np.repeat(np.round(beds)[:, None], q, axis=1), np.full((n, q), 0.87))
    # Pharmacist-led reviews: ~22 per 100 residents a quarter, varying widely between areas.
    rate = 22.0 * np.exp(0.1 * years)[None, :] * rng.lognormal(0.0, 0.55, n)[:, None]
    reviews = _poisson_gamma(rng, residents * rate / 100.0, shape=20.0)
    return {"VUL01": (reviews, residents)}


def _compliance_aids(rng, pop: np.ndarray, years: np.ndarray) -> dict:
    n, q = pop.shape
    issued = _poisson_gamma(rng, pop / 1000.0 * 1.6 * rng.lognormal(0.0, 0.3, n)[:, None], shape=30.0)
    logit_assessed = (_logit(0.6) + 0.2 * years[None, :] + rng.normal(0.0, 0.8, n)[:, None]
                      + rng.normal(0.0, 0.15, (n, q)))
    return {"ADH01": (_binomial(rng, issued, _expit(logit_assessed)), issued)}


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def _tidy_frame(indicator_id: str, level: str, codes: np.ndarray, starts: list[str], ends: list[str],
                numerator: np.ndarray, denominator: np.ndarray, breakdown: str = "all") -> pd.DataFrame:
    n, q = numerator.shape
    return pd.DataFrame({
        "INDICATOR_ID": indicator_id,
        "ORG_LEVEL": level,
        "ORG_CODE": np.repeat(codes, q),
        "PERIOD_START": np.tile(starts, n),
        "PERIOD_END": np.tile(ends, n),
        "BREAKDOWN": breakdown,
        "NUMERATOR": numerator.reshape(-1).astype(np.int64),
        "DENOMINATOR": denominator.reshape(-1).astype(np.int64),
    })


def _write_frame_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV atomically (see :mod:`moopt.atomic`)."""
    write_csv_atomic(frame, path)


def _qof_code(model_key: str, end_year: int) -> str:
    if model_key == "AF":
        return "AF008" if end_year >= _AF008_FIRST_YEAR_END else "AF007"
    return model_key


def _qof_year(rng_year, practice_effects: dict, practices: np.ndarray, population: np.ndarray,
              end_year: int, year_offset: float) -> pd.DataFrame:
    """One financial year's achievement rows: every code x practice x measure."""
    n = len(practices)
    blocks = []
    for key, model in _QOF_MODEL.items():
        code = _qof_code(key, end_year)
        prevalence_effect, achievement_effect = practice_effects[key]
        register = _binomial(rng_year, population, model["prevalence"] * prevalence_effect)
        eligible = _binomial(rng_year, register, np.full(n, model["eligible"]))
        pcas = _binomial(rng_year, eligible, np.clip(model["pca"] * rng_year.lognormal(0.0, 0.4, n), 0, 0.5))
        denominator = eligible - pcas
        logit_p = (_logit(model["achievement"]) + 0.05 * year_offset + achievement_effect
                   + rng_year.normal(0.0, 0.1, n))
        numerator = _binomial(rng_year, denominator, _expit(logit_p))
        max_points, lower, upper = model["points"]
        achieved = np.divide(numerator, denominator, out=np.zeros(n), where=denominator > 0)
        points = max_points * np.clip((achieved - lower) / (upper - lower), 0.0, 1.0)
        values = np.column_stack([
            np.char.mod("%.2f", points),
            register.astype(str), numerator.astype(str), denominator.astype(str), pcas.astype(str)])
        blocks.append(pd.DataFrame({
            "PRACTICE_CODE": np.repeat(practices, len(QOF_MEASURES)),
            "INDICATOR_CODE": code,
            "MEASURE": np.tile(QOF_MEASURES, n),
            "VALUE": values.reshape(-1),
        }))
    return pd.concat(blocks, ignore_index=True).sort_values(
        ["PRACTICE_CODE", "INDICATOR_CODE"], kind="stable", ignore_index=True)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def generate_supplied(out_dir: Path, organisations: pd.DataFrame, months: list[str], seed: int = 42) -> dict:
    """Write synthetic supplied-indicator files under ``out_dir/supplied/``.

    Parameters
    ----------
    out_dir : pathlib.Path
        The synthetic data folder. Files go to ``out_dir/supplied/`` (created if needed); files of
        the same names are replaced. When the folder also holds the synthetic generator's
        ``list_sizes/`` and ``organisations/practice_attributes.csv``, their list sizes and
        care-home beds are used as populations, so that per-patient rates agree with the
        prescribing data; otherwise populations are drawn.
    organisations : pandas.DataFrame
        The practice map as written by :func:`moopt.sources.synthetic.generate_synthetic`
        (``organisations/gp-reg-pat-prac-map.csv``); ``PRACTICE_CODE`` and
        ``SUB_ICB_LOCATION_CODE`` are used.
    months : list of str
        Consecutive months ``"YYYY-MM"``, e.g. ``["2024-10", ..., "2026-09"]``.
    seed : int
        Non-negative seed. The same seed, organisations, months and populations give
        byte-identical files.

    Returns
    -------
    dict
        ``files`` (paths relative to ``out_dir``), ``rows`` (data rows per file),
        ``quarters`` and ``financial_years`` written (e.g. ``"2025-03"``, ``"2025/26"``),
        ``indicators`` (ids per file) and ``population_source`` (``"list_sizes"``, ``"mixed"``
        or ``"drawn"``).

    Raises
    ------
    ValueError
        For organisations without the needed columns, blank or repeated practice codes, months
        that are malformed, empty or not consecutive, or a bad seed.

    Notes
    -----
    Quarterly files hold every calendar quarter (January to March, ...) whose last month is
    among ``months``; QOF files every financial year (April to March) whose March is among
    them. If there is none, the latest period ending before the last month is written, so each
    file has at least one period. TOC03 has ``completed`` and ``not_completed`` rows that sum to
    its ``all`` row, with readmission clearly lower after a completed follow-up (about 10%
    against 16%). QOF files carry the AF anticoagulation code (AF007 up to 2022/23, AF008 from
    2023/24; CVD10) and DM020 (DIA10) plus HYP008 and AST007, which moopt must ignore.

    Examples
    --------
    >>> import tempfile
    >>> orgs = pd.DataFrame({"PRACTICE_CODE": ["S00001", "S00002"], "SUB_ICB_LOCATION_CODE": ["50H", "50H"]})
    >>> summary = generate_supplied(Path(tempfile.mkdtemp()), orgs, ["2025-01", "2025-02", "2025-03"])
    >>> summary["quarters"], summary["financial_years"]
    (['2025-03'], ['2024/25'])
    """
    seed = _check_seed(seed)
    month_idx = _month_indices(months)
    orgs = _check_organisations(organisations)
    out_dir = Path(out_dir)

    quarter_ends = _period_ends(month_idx, {2, 5, 8, 11})
    year_ends = _period_ends(month_idx, {2})
    years = (quarter_ends - _REFERENCE_MONTH) / 12.0
    q_starts, q_ends = _period_bounds(quarter_ends, 3)

    practices = orgs["practice_code"]
    population, population_source = _populations(
        out_dir, practices, np.concatenate([quarter_ends, year_ends]), seed)
    quarter_pop, year_pop = population[:, : len(quarter_ends)], population[:, len(quarter_ends):]
    beds = _care_home_beds(out_dir, practices, quarter_pop, seed)

    sub_icb_codes, sub_icb_index = np.unique(orgs["sub_icb_code"].to_numpy(), return_inverse=True)
    n_sub = len(sub_icb_codes)

    def to_sub_icb(values: np.ndarray) -> np.ndarray:
        summed = np.zeros((n_sub,) + values.shape[1:])
        np.add.at(summed, sub_icb_index, values)
        return summed

    sub_pop = to_sub_icb(quarter_pop)
    values: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    values |= _community_support(_rng(seed, "eps"), _rng(seed, "repeat_dispensing"), _rng(seed, "nms"),
                                 quarter_pop, sub_icb_index, n_sub, years)
    values |= _yellow_card(_rng(seed, "yellow_card"), sub_pop, years)
    toc_values, breakdowns = _transfer_of_care(_rng(seed, "transfer_of_care"), sub_pop, years)
    values |= toc_values
    values |= _care_home_reviews(_rng(seed, "care_home_reviews"), to_sub_icb(beds), len(quarter_ends), years)
    values |= _compliance_aids(_rng(seed, "compliance_aids"), sub_pop, years)

    supplied_dir = out_dir / "supplied"
    files: list[str] = []
    rows: dict[str, int] = {}
    indicators: dict[str, list[str]] = {}
    for name, (level, ids) in SUPPLIED_SOURCES.items():
        codes = practices.to_numpy() if level == "practice" else sub_icb_codes
        frames = []
        for ident in ids:
            frames.append(_tidy_frame(ident, level, codes, q_starts, q_ends, *values[ident]))
            for label, (num, den) in breakdowns.get(ident, {}).items():
                frames.append(_tidy_frame(ident, level, codes, q_starts, q_ends, num, den, label))
        frame = pd.concat(frames, ignore_index=True)
        relative = f"supplied/{name}.csv"
        _write_frame_atomic(frame, out_dir / relative)
        files.append(relative)
        rows[relative] = len(frame)
        indicators[relative] = list(ids)

    # QOF: persistent practice effects on prevalence and achievement, fresh noise each year.
    rng_practice = _rng(seed, "qof_practice")
    n = len(practices)
    practice_effects = {code: (rng_practice.lognormal(0.0, 0.3, n), rng_practice.normal(0.0, 0.35, n))
                        for code in _QOF_MODEL}
    financial_years = []
    for j, end in enumerate(year_ends):
        end_year = int(end) // 12
        rng_year = np.random.default_rng([seed, _STREAMS["qof_year"], end_year])
        frame = _qof_year(rng_year, practice_effects, practices.to_numpy(),
                          year_pop[:, j].astype(np.int64), end_year, (int(end) - _REFERENCE_MONTH) / 12.0)
        relative = f"supplied/ACHIEVEMENT_{(end_year - 1) % 100:02d}{end_year % 100:02d}.csv"
        _write_frame_atomic(frame, out_dir / relative)
        files.append(relative)
        rows[relative] = len(frame)
        indicators[relative] = sorted(set(QOF_INDICATOR_CODES.values()))
        financial_years.append(f"{end_year - 1}/{end_year % 100:02d}")

    return {
        "files": files,
        "rows": rows,
        "indicators": indicators,
        "quarters": [_label(int(i)) for i in quarter_ends],
        "financial_years": financial_years,
        "population_source": population_source,
    }
