"""Synthetic national prescribing data in the real published file formats.

The generator builds a fictional NHS England: regions, integrated care boards (ICBs), sub-ICB
locations, primary care networks (PCNs) and GP practices whose counts and list-size distribution
follow the real ones, but whose names and codes are invented. For that population it writes
24 months (by default) of

* English Prescribing Dataset files (``epd/EPD_YYYYMM.csv``, ICB-era 26 columns),
* NHS Digital quinary age/sex list sizes (``list_sizes/gp-reg-pat-prac-quin-age_YYYYMM.csv``),
* the practice -> PCN -> sub-ICB -> ICB -> region map (``organisations/gp-reg-pat-prac-map.csv``),
* practice attributes used for peer groups (``organisations/practice_attributes.csv``),
* ``synthetic_manifest.json``, written last, whose presence marks a complete set.

Prescribing is driven by a curated formulary (``synthetic_data/formulary.csv``) of real BNF
presentations. Expected items are age/sex weighted (STAR-PU and ASTRO-PU style weights), carry
winter or summer seasonality and slow national trends, and vary between practices through
log-normal practice, sub-ICB, deprivation and care-home effects. Monthly counts are Poisson-gamma,
then split across pack sizes the way real EPD rows are.

The formulary also carries the presentations that today's national medicines optimisation
measures need (UK-AWaRe Access and Watch antibiotics, 5- and 7-day amoxicillin courses,
long-acting opioids either side of the high-dose thresholds, gabapentinoid and statin strengths,
branded and generic DOACs, metered-dose against dry powder and soft mist inhalers, glucose strips
in and outside NHS England's list, low-priority products, a salbutamol inhaler sometimes
recorded in doses rather than inhalers), with trends that move those measures
the way national data have: the Access share and the high-intensity statin share rise, the MDI
share and opioid volumes fall. Class effects give each practice its own preferences for inhaler
device, high-dose opioids, DOAC brands and low-priority products.

Month-to-month variation
------------------------
Real monthly prescribing moves by a few per cent from month to month for reasons no seasonal
pattern explains, and statistical process control charts of the dashboards need that
variation to show common-cause noise rather than a smooth line. Each month's expected items
are therefore multiplied by

* a working-day factor, ``(working days / 21.08) ** 0.7``, where working days are the weekdays
  that are not English bank holidays (computed by rule, Easter included; see
  :func:`english_bank_holidays`). The same calendar month has one or two working days more or
  fewer from year to year (Easter moves between March and April), which alone moves its items
  by 3-7%;
* a gamma multiplier per practice and month (coefficient of variation, CV, about 6%: staffing,
  batch issuing of repeats and chance), and a smaller log-normal one shared by every practice
  of a sub-ICB location in that month (CV about 2.5%: local events such as outbreaks, pharmacy
  closures or submission timing);
* the existing gamma noise per practice, presentation and month (CV 11% for repeat, 20% for
  acute presentations), before the Poisson draw.

The figure aimed at: a sub-ICB location's monthly items per 1,000 patients, seasonally
adjusted (classical decomposition: the ratio to a centred 2x12-month moving average, divided
by the mean ratio of that calendar month), has a CV of about 4% (3-5%); a practice's about
7-8%. Why that figure: working days alone move a calendar month by 3-7% between years, and a
sub-ICB location of 100,000 to 1,000,000 patients sees a further couple of per cent of local
chance, while far less (Poisson noise alone is well under 1% at sub-ICB level) draws almost
flat lines and far more (over 10%) would bury real changes. ``tests/test_synthetic.py``
measures it on the small scale.

Everything is derived from ``seed``: the same seed gives byte-identical files.
"""

from __future__ import annotations

import calendar
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

__all__ = [
    "ATTRIBUTE_COLUMNS",
    "EPD_COLUMNS",
    "LIST_SIZE_COLUMNS",
    "MAP_COLUMNS",
    "Organisations",
    "SCALES",
    "ScaleSpec",
    "build_organisations",
    "easter_sunday",
    "english_bank_holidays",
    "generate_synthetic",
    "practice_list_counts",
    "working_days",
]

# --------------------------------------------------------------------------------------------
# Published layouts written by the generator
# --------------------------------------------------------------------------------------------

EPD_COLUMNS: tuple[str, ...] = (
    "YEAR_MONTH", "REGIONAL_OFFICE_NAME", "REGIONAL_OFFICE_CODE", "ICB_NAME", "ICB_CODE",
    "PCO_NAME", "PCO_CODE", "PRACTICE_NAME", "PRACTICE_CODE", "ADDRESS_1", "ADDRESS_2",
    "ADDRESS_3", "ADDRESS_4", "POSTCODE", "BNF_CHEMICAL_SUBSTANCE", "CHEMICAL_SUBSTANCE_BNF_DESCR",
    "BNF_CODE", "BNF_DESCRIPTION", "BNF_CHAPTER_PLUS_CODE", "QUANTITY", "ITEMS", "TOTAL_QUANTITY",
    "ADQUSAGE", "NIC", "ACTUAL_COST", "UNIDENTIFIED",
)  # fmt: skip

LIST_SIZE_COLUMNS: tuple[str, ...] = (
    "PUBLICATION", "EXTRACT_DATE", "ORG_TYPE", "ORG_CODE", "ONS_CODE", "POSTCODE", "SEX",
    "AGE_GROUP_5", "NUMBER_OF_PATIENTS",
)  # fmt: skip

MAP_COLUMNS: tuple[str, ...] = (
    "PUBLICATION", "EXTRACT_DATE", "PRACTICE_CODE", "PRACTICE_NAME", "PRACTICE_POSTCODE",
    "PCN_CODE", "PCN_NAME", "ONS_SUB_ICB_LOCATION_CODE", "SUB_ICB_LOCATION_CODE",
    "SUB_ICB_LOCATION_NAME", "ONS_ICB_CODE", "ICB_CODE", "ICB_NAME", "ONS_COMM_REGION_CODE",
    "COMM_REGION_CODE", "COMM_REGION_NAME", "SUPPLIER_NAME",
)  # fmt: skip

ATTRIBUTE_COLUMNS: tuple[str, ...] = (
    "PRACTICE_CODE", "DEPRIVATION_SCORE", "RURAL", "CARE_HOME_BEDS",
)  # fmt: skip

PUBLICATION = "GP_PRAC_PAT_LIST"

# Quinary bands of the NHS Digital file and the nine STAR-PU / ASTRO-PU bands they fold into.
QUINARY_BANDS: tuple[str, ...] = tuple(f"{a}_{a + 4}" for a in range(0, 95, 5)) + ("95+",)
STARPU_BANDS: tuple[str, ...] = (
    "0-4", "5-14", "15-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+",
)  # fmt: skip
_QUINARY_TO_STARPU = np.array([0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 8, 8, 8])
_BAND_MIDPOINTS = np.array([2.5 + 5 * i for i in range(19)] + [97.0])

# England's registered list by sex and STAR-PU band in 2016 (% of the list; male, female).
_MIX_2016 = np.array([
    [3.00, 2.85], [5.86, 5.59], [6.09, 6.10], [7.14, 7.23], [6.92, 6.55],
    [7.26, 6.95], [5.65, 5.59], [4.56, 4.85], [3.29, 4.51],
])  # fmt: skip
# How each nine-band share splits into quinary bands (male, female), a modelling choice close
# to the England profile.
_SPLIT = {
    0: ([1.0], [1.0]),
    1: ([0.5, 0.5], [0.5, 0.5]),
    2: ([0.47, 0.53], [0.47, 0.53]),
    3: ([0.5, 0.5], [0.5, 0.5]),
    4: ([0.5, 0.5], [0.5, 0.5]),
    5: ([0.48, 0.52], [0.48, 0.52]),
    6: ([0.53, 0.47], [0.53, 0.47]),
    7: ([0.55, 0.45], [0.55, 0.45]),
    8: ([0.42, 0.30, 0.18, 0.08, 0.02], [0.34, 0.28, 0.21, 0.13, 0.04]),
}

CHAPTER_NAMES: dict[str, str] = {
    "01": "Gastro-Intestinal System",
    "02": "Cardiovascular System",
    "03": "Respiratory System",
    "04": "Central Nervous System",
    "05": "Infections",
    "06": "Endocrine System",
    "07": "Obstetrics, Gynaecology and Urinary-Tract Disorders",
    "08": "Malignant Disease and Immunosuppression",
    "09": "Nutrition and Blood",
    "10": "Musculoskeletal and Joint Diseases",
    "11": "Eye",
    "12": "Ear, Nose and Oropharynx",
    "13": "Skin",
    "14": "Immunological Products and Vaccines",
    "15": "Anaesthesia",
    "18": "Preparations used in Diagnosis",
    "19": "Other Drugs and Preparations",
}

SYNTHETIC_NOTICE = (
    "Synthetic data: organisation names and codes are fictional and every figure is simulated. "
    "The files follow the published NHS formats so the suite can be exercised end to end; "
    "they describe no real practice, patient or organisation and must not be used for decisions."
)


# --------------------------------------------------------------------------------------------
# Scales
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleSpec:
    """A size of synthetic England.

    Attributes
    ----------
    name : str
        Key in :data:`SCALES`.
    description : str
        One line for humans.
    practice_column : str
        Column of the packaged structure table that gives practices per sub-ICB location
        (sub-ICBs with 0 there are left out).
    super_practice_rate : float
        Share of practices drawn as very large merged practices (40,000 to 90,000 patients).
    """

    name: str
    description: str
    practice_column: str
    super_practice_rate: float


SCALES: dict[str, ScaleSpec] = {
    "national": ScaleSpec(
        "national",
        "England-sized: 7 regions, 42 ICBs, 106 sub-ICB locations, about 6,200 practices",
        "practices",
        0.001,
    ),
    "small": ScaleSpec(
        "small",
        "Test-sized: 2 regions, 3 ICBs, 6 sub-ICB locations, about 120 practices",
        "small_practices",
        0.0,
    ),
}


def _check_scale(scale: str) -> ScaleSpec:
    if scale not in SCALES:
        raise ValueError(
            f"Unknown synthetic data scale {scale!r}. Valid scales: {', '.join(SCALES)}."
        )
    return SCALES[scale]


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"The seed must be a non-negative integer, not {seed!r}.")
    return int(seed)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator for one named stream of one seed."""
    return np.random.default_rng([seed, *stream])


# Stream numbers keep the parts of the model independent of each other.
_STREAM_AREAS, _STREAM_PRACTICES, _STREAM_NAMES, _STREAM_EFFECTS, _STREAM_PRICES = 1, 2, 3, 4, 5
_STREAM_MONTH = 1000


# --------------------------------------------------------------------------------------------
# Packaged tables
# --------------------------------------------------------------------------------------------


def _data_path(name: str):
    return resources.files("moopt.sources").joinpath("synthetic_data", name)


@lru_cache(maxsize=None)
def _structure() -> pd.DataFrame:
    with _data_path("structure.csv").open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle, dtype=str, keep_default_na=False).astype(
            {"practices": int, "small_practices": int}
        )


@lru_cache(maxsize=None)
def _formulary() -> pd.DataFrame:
    with _data_path("formulary.csv").open("r", encoding="utf-8") as handle:
        table = pd.read_csv(handle, dtype={"bnf_code": str}, keep_default_na=False)
    if not table.bnf_code.str.len().eq(15).all():
        raise ValueError("The packaged synthetic formulary has a BNF code not 15 characters long.")
    return table.sort_values("bnf_code").reset_index(drop=True)


@lru_cache(maxsize=None)
def _age_weights() -> dict[str, np.ndarray]:
    """Weight group -> array (2, 9) of [male, female] weights by STAR-PU band."""
    with _data_path("age_weights.csv").open("r", encoding="utf-8") as handle:
        table = pd.read_csv(handle)
    out: dict[str, np.ndarray] = {}
    for group, rows in table.groupby("weight_group", sort=True):
        rows = rows.set_index("age_band").loc[list(STARPU_BANDS)]
        out[group] = np.vstack([rows.male.to_numpy(float), rows.female.to_numpy(float)])
    return out


def _base_quinary_mix() -> np.ndarray:
    """England-like age/sex mix as shares, shape (2, 20): sex (male, female) x quinary band."""
    mix = np.zeros((2, len(QUINARY_BANDS)))
    for sex in (0, 1):
        pos = 0
        for band in range(9):
            parts = _SPLIT[band][sex]
            for part in parts:
                mix[sex, pos] = _MIX_2016[band, sex] * part
                pos += 1
    return mix / mix.sum()


# --------------------------------------------------------------------------------------------
# Fictional names
# --------------------------------------------------------------------------------------------

_NAME_STEMS = (
    "Quill", "Zephyr", "Glimmer", "Thimble", "Nimble", "Vellum", "Lumen", "Gossam", "Pellow",
    "Orrin", "Brindle", "Dapple", "Inkle", "Zindle", "Mistle", "Kindle", "Plume", "Corvid",
    "Elver", "Fennick", "Russet", "Sable", "Tansy", "Umber", "Cobble", "Marrow", "Brumble",
    "Jasper", "Bramwick", "Oriel", "Pernick", "Wicket", "Saffron", "Pippin", "Hobble", "Vantle",
    "Trundle", "Whistle", "Flinder", "Pewter", "Ravel", "Shimmer", "Tinder", "Wimble", "Yonder",
    "Frindle", "Bobbin", "Mollick", "Drizzle", "Quimble", "Snorrel", "Gimble", "Hazzle", "Jingle",
)  # fmt: skip
_NAME_ENDINGS = (
    "marsh", "combe", "thorpe", "wick", "ford", "stead", "mere", "holt", "worth", "hurst",
    "moor", "dale", "haven", "bury", "field", "brook", "by", "ton", "well", "gate", "croft",
    "stow", "ley", "cliffe", "wood", "bridge", "ham", "ridge",
)  # fmt: skip
_STREET_WORDS = ("ROAD", "LANE", "STREET", "PARK", "GREEN", "GROVE", "HILL", "SQUARE", "VALE")
_PRACTICE_TYPES = (
    "SURGERY", "MEDICAL CENTRE", "HEALTH CENTRE", "MEDICAL PRACTICE", "FAMILY PRACTICE",
    "GROUP PRACTICE", "HEALTHCARE",
)  # fmt: skip
_PCN_QUALIFIERS = ("", "", "NORTH ", "SOUTH ", "EAST ", "WEST ", "CENTRAL ", "RURAL ")
# Two-letter postcode areas that no real UK postcode uses.
_POSTCODE_AREAS = (
    "FA", "FB", "FC", "FD", "FE", "FF", "FG", "FH", "FL", "FM", "FN", "FP", "FR", "FS", "FT",
    "FU", "FW", "JA", "JB", "JC", "JD", "JF", "JG", "KB", "KC", "KD", "KE", "KF", "OA", "OB",
    "OC", "OD", "OE", "OF", "OG", "UA", "UC", "UD", "UE", "UF", "UG", "UH", "GA", "GB", "GC",
    "GD", "GE", "GF", "GG", "GH", "AA", "AC", "AD", "AE", "AF", "AG", "AH", "AK", "AM", "AN",
    "AP", "AR", "AS", "AT", "AU", "AW", "AX", "AY", "BC", "BE", "BF", "BG", "BJ", "BK", "BM",
    "BP", "BQ", "BU", "BV", "BW", "BX", "BY", "CC", "CD", "CE", "CG", "CJ", "CK", "CN", "CP",
    "CQ", "CS", "CU", "CX", "CY", "DB", "DC", "DF", "DJ", "DK", "DM", "DP", "DQ", "DR", "DS",
    "DU", "DV", "DW", "DX",
)  # fmt: skip
_INWARD_LETTERS = np.array(list("ABDEFGHJLNPQRSTUWXYZ"))
_PRACTICE_LETTERS = "STVXZ"  # first letters no English GP practice code uses


def _town_names(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` invented town names (upper case), unique while the pool lasts."""
    pool = np.array([(s + e).upper() for s in _NAME_STEMS for e in _NAME_ENDINGS])
    if n <= len(pool):
        return rng.choice(pool, size=n, replace=False)
    return rng.choice(pool, size=n, replace=True)


def _deduplicate(names: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replace repeated practice names with unused street-style names."""
    names = names.astype(object)
    repeated = pd.Series(names).duplicated().to_numpy()
    if not repeated.any():
        return names.astype(str)
    streets = [f"{s.upper()} {w}" for s in _NAME_STEMS for w in _STREET_WORDS]
    towns = [(s + e).upper() for s in _NAME_STEMS for e in _NAME_ENDINGS]
    pool = np.array([f"{place} {t}" for place in streets + towns for t in _PRACTICE_TYPES])
    pool = pool[~pd.Index(pool).isin(names)]
    pool = rng.permutation(pool)
    n_rep = int(repeated.sum())
    names[repeated] = pool[:n_rep] if n_rep <= len(pool) else rng.choice(pool, n_rep)
    return names.astype(str)


# --------------------------------------------------------------------------------------------
# Organisation structure
# --------------------------------------------------------------------------------------------


@dataclass
class Organisations:
    """The fictional organisation structure and static practice characteristics.

    Attributes
    ----------
    scale, seed : str, int
        What built it.
    sub_icbs : pandas.DataFrame
        One row per sub-ICB location with its ICB and region (codes, names, ONS codes) and area
        characteristics.
    pcns : pandas.DataFrame
        One row per PCN: ``pcn_code``, ``pcn_name``, ``sub_icb_code``, ``town``.
    practices : pandas.DataFrame
        One row per GP practice, sorted by ``practice_code``: codes and names of every parent,
        ``postcode``, ``supplier``, ``list_size`` (first month),
        ``deprivation_score``, ``rural``, ``care_home_beds``, ``age_index``, ``growth``.
    age_mix : numpy.ndarray
        Shape (practices, 2, 20): each practice's share of patients by sex (male, female) and
        quinary band; each practice's shares sum to 1.
    out_of_hours : pandas.DataFrame
        Non-GP cost centres (one out-of-hours service per ICB). They prescribe but are not in
        the practice map, list-size or attribute files.
    """

    scale: str
    seed: int
    sub_icbs: pd.DataFrame
    pcns: pd.DataFrame
    practices: pd.DataFrame
    age_mix: np.ndarray
    out_of_hours: pd.DataFrame
    list_walk: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))

    @property
    def counts(self) -> dict[str, int]:
        """Numbers of organisations at each level."""
        return {
            "regions": int(self.sub_icbs.region_code.nunique()),
            "icbs": int(self.sub_icbs.icb_code.nunique()),
            "sub_icbs": int(len(self.sub_icbs)),
            "pcns": int(len(self.pcns)),
            "practices": int(len(self.practices)),
            "out_of_hours_cost_centres": int(len(self.out_of_hours)),
        }


def _draw_list_sizes(rng: np.random.Generator, n: int, super_rate: float) -> np.ndarray:
    """Practice list sizes shaped like England's January 2021 distribution.

    A two-piece log-normal with a longer lower tail than upper tail, plus a few very large merged
    practices. The median is set a little above England's (7,931) because rural practices are
    later shrunk by a fifth; after that the mean is ~9,000, the median ~7,900, p5 ~2,600 and
    p95 ~19,300.
    """
    median, sigma_low, sigma_high = 8200.0, 0.68, 0.53
    z = rng.standard_normal(n)
    sizes = median * np.exp(np.where(z < 0, sigma_low * z, sigma_high * z))
    n_super = int(round(super_rate * n))
    if n_super:
        which = rng.choice(n, size=n_super, replace=False)
        sizes[which] = rng.uniform(40_000, 90_000, size=n_super)
    return np.clip(np.round(sizes), 600, None)


def build_organisations(scale: str = "national", seed: int = 42) -> Organisations:
    """Build the fictional organisation structure for one scale, without any prescribing.

    Parameters
    ----------
    scale : str
        A key of :data:`SCALES` (``"national"`` or ``"small"``).
    seed : int
        Non-negative seed; the same seed gives the same organisations.

    Returns
    -------
    Organisations
        Sub-ICBs, PCNs, practices (with list sizes, age/sex mix and attributes) and the
        out-of-hours cost centres.

    Notes
    -----
    Counts of regions, ICBs and sub-ICB locations, and practices per sub-ICB, come from the
    packaged ``structure.csv``, which copies the shape of England's October 2025 hierarchy
    (7 / 42 / 106, about 6,200 practices) with invented names and codes. Practices are grouped
    into PCNs of roughly 23,000 to 58,000 patients within their sub-ICB.

    Examples
    --------
    >>> orgs = build_organisations("small", seed=1)
    >>> orgs.counts["regions"], orgs.counts["icbs"], orgs.counts["sub_icbs"]
    (2, 3, 6)
    """
    spec = _check_scale(scale)
    seed = _check_seed(seed)
    structure = _structure()
    structure = structure[structure[spec.practice_column] > 0].reset_index(drop=True)
    n_per_sub = structure[spec.practice_column].to_numpy(int)

    area_rng = _rng(seed, _STREAM_AREAS)
    n_sub = len(structure)
    capital = structure.region_name.str.contains("Capital").to_numpy()
    coastal = area_rng.random(n_sub) < 0.15
    sub = structure.rename(columns={spec.practice_column: "n_practices"}).copy()
    sub["area_age"] = area_rng.normal(0.0, 0.18, n_sub) - 0.35 * capital + 0.3 * coastal
    sub["area_deprivation"] = np.exp(
        area_rng.normal(math.log(19.0), 0.33, n_sub) + 0.25 * capital
    )
    sub["area_rural"] = np.where(capital, 0.0, area_rng.beta(1.2, 5.0, n_sub))
    sub["area_emis"] = area_rng.beta(0.7, 0.5, n_sub)
    sub["postcode_area"] = area_rng.choice(np.array(_POSTCODE_AREAS), size=n_sub, replace=False)
    sub = sub.drop(columns=[c for c in ("practices", "small_practices") if c in sub.columns])

    # ---------------- practices ----------------
    prng = _rng(seed, _STREAM_PRACTICES)
    n = int(n_per_sub.sum())
    sub_idx = np.repeat(np.arange(n_sub), n_per_sub)
    rural = prng.random(n) < sub.area_rural.to_numpy()[sub_idx]
    list_size = _draw_list_sizes(prng, n, spec.super_practice_rate)
    list_size = np.where(rural, np.round(list_size * 0.8), list_size)
    age_index = sub.area_age.to_numpy()[sub_idx] + prng.normal(0.0, 0.28, n) + 0.15 * rural
    student = prng.random(n) < 0.008
    age_index = np.where(student, age_index - 0.6, age_index)
    deprivation = np.clip(
        sub.area_deprivation.to_numpy()[sub_idx] * np.exp(prng.normal(0.0, 0.4, n) - 0.15 * rural),
        1.5,
        92.0,
    )
    # Age/sex mix: tilt the England profile older or younger, with band-level noise.
    base = _base_quinary_mix()
    slope = (_BAND_MIDPOINTS - 40.0) / 40.0
    log_mix = (
        np.log(base)[None, :, :]
        + age_index[:, None, None] * slope[None, None, :]
        + prng.normal(0.0, 0.06, (n, 2, len(QUINARY_BANDS)))
    )
    student_bump = np.zeros(len(QUINARY_BANDS))
    student_bump[[3, 4]] = math.log(6.0)
    student_bump[5] = math.log(1.5)
    log_mix = log_mix + student[:, None, None] * student_bump[None, None, :]
    sex_tilt = prng.normal(0.0, 0.05, n)
    log_mix[:, 0, :] += sex_tilt[:, None]
    log_mix[:, 1, :] -= sex_tilt[:, None]
    mix = np.exp(log_mix)
    mix /= mix.sum(axis=(1, 2), keepdims=True)
    older = mix[:, :, 13:].sum(axis=(1, 2))  # 65 and over
    beds_mean = list_size / 1000.0 * 7.0 * np.exp(4.0 * (older - older.mean()))
    has_beds = prng.random(n) < 0.7
    care_home_beds = np.where(
        has_beds, np.minimum(prng.poisson(prng.gamma(1.2, beds_mean / 0.7 / 1.2)), 450), 0
    ).astype(int)
    growth = prng.normal(0.009, 0.015, n)  # annual list growth
    supplier = np.where(prng.random(n) < sub.area_emis.to_numpy()[sub_idx], "EMIS", "TPP")
    supplier = np.where(prng.random(n) < 0.0012, "Unknown", supplier)

    # ---------------- PCNs: greedy groups of ~23k-58k patients within a sub-ICB ----------------
    order = np.lexsort((prng.random(n), sub_idx))
    pcn_of = np.empty(n, dtype=int)
    pcn_sub: list[int] = []
    current_sub, filled, target = -1, 0.0, 0.0
    for i in order:  # one pass over ~6,200 practices; builds the grouping, not the data
        s = sub_idx[i]
        if s != current_sub or filled >= target:
            pcn_sub.append(s)
            current_sub, filled, target = s, 0.0, prng.uniform(23_000, 58_000)
        pcn_of[i] = len(pcn_sub) - 1
        filled += list_size[i]
    n_pcn = len(pcn_sub)

    # ---------------- names, codes and addresses ----------------
    nrng = _rng(seed, _STREAM_NAMES)
    towns = _town_names(nrng, n_pcn)
    qualifiers = nrng.choice(np.array(_PCN_QUALIFIERS), size=n_pcn)
    pcn_numbers = nrng.choice(np.arange(10_000, 100_000), n_pcn, replace=False)
    pcn_codes = np.char.add("U", pcn_numbers.astype(str))
    pcn_names = np.char.add(np.char.add(qualifiers.astype(str), towns.astype(str)), " PCN")
    pcns = pd.DataFrame(
        {
            "pcn_code": pcn_codes,
            "pcn_name": pcn_names,
            "sub_icb_code": sub.sub_icb_code.to_numpy()[np.array(pcn_sub)],
            "town": towns,
        }
    )

    street_stems = nrng.choice(np.array([s.upper() for s in _NAME_STEMS]), size=n)
    street_words = nrng.choice(np.array(_STREET_WORDS), size=n)
    types = nrng.choice(np.array(_PRACTICE_TYPES), size=n)
    pattern = nrng.random(n)
    town_of = towns[pcn_of]
    street = np.char.add(np.char.add(street_stems.astype(str), " "), street_words.astype(str))
    place = np.where(pattern < 0.45, town_of, street)
    names = np.char.add(np.char.add(place.astype(str), " "), types.astype(str))
    names = np.where(pattern > 0.93, np.char.add("THE ", names.astype(str)), names)
    names = _deduplicate(names, nrng)

    # Practice codes: a letter per region, a two-digit block per sub-ICB (its position within
    # its region in the national table, so codes agree across scales), then a 3-digit serial.
    full = _structure()
    region_pos = {r: i for i, r in enumerate(sorted(set(full.region_code)))}
    block = dict(zip(full.sub_icb_code, full.groupby("region_code").cumcount()))
    sub_prefix = np.array(
        [
            f"{_PRACTICE_LETTERS[region_pos[r] % len(_PRACTICE_LETTERS)]}"
            f"{10 + 45 * (region_pos[r] // len(_PRACTICE_LETTERS)) + block[c]:02d}"
            for r, c in zip(sub.region_code, sub.sub_icb_code)
        ]
    )
    serial = np.zeros(n, dtype=int)
    for s in range(n_sub):
        members = np.flatnonzero(sub_idx == s)
        serial[members] = np.sort(nrng.choice(np.arange(1, 1000), len(members), replace=False))
    codes = np.char.add(sub_prefix[sub_idx], np.char.zfill(serial.astype(str), 3))

    district = nrng.integers(1, 60, n_pcn)[pcn_of]
    inward = np.char.add(
        np.char.add(nrng.integers(1, 10, n).astype(str), nrng.choice(_INWARD_LETTERS, n)),
        nrng.choice(_INWARD_LETTERS, n),
    )
    outward = np.char.add(sub.postcode_area.to_numpy()[sub_idx].astype(str), district.astype(str))
    postcodes = np.char.add(np.char.add(outward, " "), inward)

    parent_cols = [
        "sub_icb_code", "sub_icb_name", "ons_sub_icb_code", "icb_code", "icb_name", "icb_place",
        "ons_icb_code", "region_code", "region_name", "ons_region_code",
    ]  # fmt: skip
    practices = pd.DataFrame(
        {
            "practice_code": codes,
            "practice_name": names,
            "postcode": postcodes,
            "pcn_code": pcn_codes[pcn_of],
            "pcn_name": pcn_names[pcn_of],
            **{c: sub[c].to_numpy()[sub_idx] for c in parent_cols},
            "supplier": supplier,
            "list_size": list_size.astype(int),
            "deprivation_score": np.round(deprivation, 1),
            "rural": np.where(rural, "Y", "N"),
            "care_home_beds": care_home_beds,
            "age_index": age_index,
            "student": student,
            "growth": growth,
        }
    )
    order = np.argsort(practices.practice_code.to_numpy(), kind="stable")
    practices = practices.iloc[order].reset_index(drop=True)
    mix = mix[order]

    # A slow random walk on list size, one step a month (up to 20 years of months).
    walk = np.cumsum(prng.normal(0.0, 0.002, (n, 240)), axis=1)[order]

    # ---------------- out-of-hours cost centres, one per ICB ----------------
    icbs = sub.drop_duplicates("icb_code").reset_index(drop=True)
    ooh_serial = np.sort(nrng.choice(np.arange(100, 1000), size=len(icbs), replace=False))
    ooh = pd.DataFrame(
        {
            "practice_code": [f"Y09{s:03d}" for s in ooh_serial],
            "practice_name": [f"{p.upper()} OUT OF HOURS SERVICE" for p in icbs.icb_place],
            "postcode": [f"{a}1 1AA" for a in icbs.postcode_area],
            **{c: icbs[c].to_numpy() for c in parent_cols},
        }
    )
    icb_population = practices.groupby("icb_code").list_size.sum()
    ooh["population"] = icb_population.reindex(ooh.icb_code).to_numpy()

    return Organisations(
        scale=spec.name,
        seed=seed,
        sub_icbs=sub.reset_index(drop=True),
        pcns=pcns.sort_values("pcn_code").reset_index(drop=True),
        practices=practices,
        age_mix=mix,
        out_of_hours=ooh,
        list_walk=walk,
    )


def practice_list_counts(orgs: Organisations, month_index: int) -> np.ndarray:
    """Registered patients by practice, sex and quinary band in one month.

    Parameters
    ----------
    orgs : Organisations
        From :func:`build_organisations`.
    month_index : int
        Months since the first generated month (0 for the first).

    Returns
    -------
    numpy.ndarray
        Integer array of shape (practices, 2, 20): sex (male, female) x quinary band. A
        practice's total list is the sum over both axes.
    """
    if not 0 <= month_index < orgs.list_walk.shape[1]:
        raise ValueError(
            f"month_index must be between 0 and {orgs.list_walk.shape[1] - 1}, not {month_index}."
        )
    p = orgs.practices
    size = p.list_size.to_numpy(float) * np.exp(
        p.growth.to_numpy() * month_index / 12.0 + orgs.list_walk[:, month_index]
    )
    return np.round(size[:, None, None] * orgs.age_mix).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Prescribing model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ClassEffect:
    practice_sd: float  # log-scale SD of the practice effect for the class
    area_sd: float  # log-scale SD of the sub-ICB effect
    deprivation: float  # log effect per SD of log deprivation score
    care_homes: float  # log effect per SD of care-home beds per 1,000 patients
    parent: str | None = None  # effects of the parent class also apply


_CLASS_EFFECTS: dict[str, _ClassEffect] = {
    "antibacterial": _ClassEffect(0.20, 0.10, 0.08, 0.04),
    "broad_spectrum": _ClassEffect(0.22, 0.15, 0.0, 0.03, "antibacterial"),
    "uti": _ClassEffect(0.15, 0.08, 0.02, 0.10, "antibacterial"),
    "hypnotic": _ClassEffect(0.35, 0.15, 0.06, 0.10),
    "anxiolytic": _ClassEffect(0.25, 0.10, 0.08, 0.03, "hypnotic"),
    "antidepressant": _ClassEffect(0.20, 0.10, 0.10, 0.02),
    "antipsychotic": _ClassEffect(0.25, 0.10, 0.12, 0.18),
    "opioid": _ClassEffect(0.28, 0.15, 0.15, 0.04),
    "gabapentinoid": _ClassEffect(0.30, 0.15, 0.08, 0.02, "opioid"),
    "antiepileptic": _ClassEffect(0.12, 0.05, 0.05, 0.03),
    "nsaid": _ClassEffect(0.25, 0.12, 0.04, -0.05),
    "anticoagulant": _ClassEffect(0.10, 0.05, -0.02, 0.05),
    "lipid": _ClassEffect(0.12, 0.08, 0.03, 0.0),
    "saba": _ClassEffect(0.22, 0.10, 0.12, 0.0),
    "ics": _ClassEffect(0.22, 0.12, 0.06, 0.0),
    "diabetes": _ClassEffect(0.12, 0.06, 0.10, 0.0),
    "insulin": _ClassEffect(0.25, 0.15, 0.0, 0.0, "diabetes"),
    "sglt2": _ClassEffect(0.30, 0.20, -0.05, 0.0, "diabetes"),
    "strips": _ClassEffect(0.35, 0.30, 0.0, 0.0, "diabetes"),
    "other": _ClassEffect(0.12, 0.05, 0.03, 0.02),
    # Preferences that split a family between practices: dry powder and soft mist devices
    # against MDIs, the strongest opioid strengths, DOACs prescribed by brand, and products
    # NHS England says should not routinely be prescribed.
    "low_carbon_inhaler": _ClassEffect(0.40, 0.30, -0.05, 0.0, "ics"),
    "high_dose_opioid": _ClassEffect(0.35, 0.15, 0.05, 0.0, "opioid"),
    "doac_brand": _ClassEffect(0.60, 0.35, 0.0, 0.0, "anticoagulant"),
    "low_priority": _ClassEffect(0.45, 0.30, 0.0, 0.0),
}
_GENERAL_PRACTICE_SD = 0.08
# About 0.5% of practices are outliers: half for antibacterials, half for hypnotics/anxiolytics.
_OUTLIERS = {"antibacterial": 3.0, "hypnotic": 5.0}
_OUTLIER_RATE = 0.0025
_COURSES = ("acute", "repeat", "single")
_COURSE_TILT_SD = {"acute": 0.45, "repeat": 0.35, "single": 0.0}
_ACUTE_TILT_TREND = -0.06  # acute courses get a little shorter each year
# Out-of-hours services issue about this many items per registered patient of their ICB for
# each item a practice issues (times the presentation's ooh_rate), ~0.1% of EPD rows.
_OOH_SHARE = 0.0008
# ACTUAL_COST = NIC less discount plus a container allowance per item; ~0.93 x NIC overall.
_DISCOUNT_FACTOR, _CONTAINER_ALLOWANCE = 0.921, 0.061
# Month-to-month variation beyond Poisson (see the module notes for the figures aimed at):
# a practice-wide gamma multiplier (shape 250: CV ~6%) and a smaller log-normal one shared by
# every practice of a sub-ICB location (SD 0.025: CV ~2.5%).
_PRACTICE_MONTH_SHAPE = 250.0
_SUB_ICB_MONTH_SD = 0.025
# Items rise less than in proportion to working days (repeat items are issued on a cycle and
# pharmacies also dispense at weekends): 10% more working days give ~7% more items.
_WORKING_DAY_ELASTICITY = 0.7
# England averages 253 working days a year (261 weekdays less 8 bank holidays).
_MEAN_WORKING_DAYS = 253.0 / 12.0
_FLU_PROFILE = np.array([0.5, 0.2, 0.1, 0.05, 0.05, 0.05, 0.05, 0.1, 1.5, 4.5, 3.0, 1.2])
_FLU_PROFILE = _FLU_PROFILE / _FLU_PROFILE.mean()


def _seasonal_factor(profile: np.ndarray, amplitude: np.ndarray, month: int) -> np.ndarray:
    """Multiplier for each formulary row in calendar month ``month`` (1-12); mean 1 over a year."""
    winter = np.cos(2 * np.pi * (month - 0.5) / 12.0)  # peaks between December and January
    summer = np.cos(2 * np.pi * (month - 6.0) / 12.0)  # peaks in June
    out = np.ones(len(profile))
    out = np.where(profile == "winter", 1.0 + amplitude * winter, out)
    out = np.where(profile == "summer", 1.0 + amplitude * summer, out)
    out = np.where(profile == "flu", 1.0 + amplitude * (_FLU_PROFILE[month - 1] - 1.0), out)
    return np.clip(out, 0.02, None)


def easter_sunday(year: int) -> date:
    """Easter Sunday of a Gregorian year (the anonymous Gregorian "computus" algorithm).

    Examples
    --------
    >>> easter_sunday(2025)
    datetime.date(2025, 4, 20)
    """
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l = (32 + 2 * e + 2 * i - h - k) % 7  # noqa: E741 (the algorithm's own name)
    m = (a + 11 * h + 19 * l) // 433
    month = (h + l - 7 * m + 90) // 25
    day = (h + l - 7 * m + 33 * month + 19) % 32
    return date(year, month, day)


def english_bank_holidays(year: int) -> list[date]:
    """The eight regular bank holidays of England and Wales in ``year``, by rule.

    New Year's Day, Good Friday, Easter Monday, the early May bank holiday (first Monday of
    May), the spring bank holiday (last Monday of May), the summer bank holiday (last Monday
    of August), Christmas Day and Boxing Day. A New Year's, Christmas or Boxing Day falling at a
    weekend is replaced by the next weekday that is not already a holiday (the substitute
    day), so there are always eight weekday holidays.

    Parameters
    ----------
    year : int
        Calendar year.

    Returns
    -------
    list of datetime.date
        Sorted dates, all Monday to Friday.

    Notes
    -----
    One-off holidays proclaimed for a single year (royal jubilees, coronations, state
    funerals, and the early May holiday moved for VE Day in 1995 and 2020) follow no rule
    and are not included.

    Examples
    --------
    >>> [d.isoformat() for d in english_bank_holidays(2026)][-2:]
    ['2026-12-25', '2026-12-28']
    """

    def last_monday(month: int) -> date:
        last = date(year, month, calendar.monthrange(year, month)[1])
        return last - timedelta(days=last.weekday())

    def first_monday(month: int) -> date:
        first = date(year, month, 1)
        return first + timedelta(days=(7 - first.weekday()) % 7)

    easter = easter_sunday(year)
    fixed = [date(year, 1, 1), date(year, 12, 25), date(year, 12, 26)]
    taken = {easter - timedelta(days=2), easter + timedelta(days=1), first_monday(5),
             last_monday(5), last_monday(8)}  # fmt: skip
    for day in fixed:  # in date order, so Christmas takes its substitute before Boxing Day
        while day.weekday() >= 5 or day in taken:
            day += timedelta(days=1)
        taken.add(day)
    return sorted(taken)


def working_days(year: int, month: int) -> int:
    """Weekdays in a month that are not English bank holidays.

    Examples
    --------
    >>> working_days(2025, 4)  # 22 weekdays less Good Friday and Easter Monday
    20
    """
    holidays = {d for d in english_bank_holidays(year) if d.month == month}
    days = calendar.monthrange(year, month)[1]
    return sum(
        1
        for d in range(1, days + 1)
        if calendar.weekday(year, month, d) < 5 and date(year, month, d) not in holidays
    )


def _working_day_factor(year: int, month: int) -> float:
    """Relative prescribing volume from the month's working days (mean about 1 over a year)."""
    return (working_days(year, month) / _MEAN_WORKING_DAYS) ** _WORKING_DAY_ELASTICITY


@dataclass
class _Model:
    formulary: pd.DataFrame
    weights: np.ndarray  # (groups, 2, 9)
    group_of_row: np.ndarray  # (R,)
    rate_per_unit: np.ndarray  # (R,) items a month per weighted patient
    effect: np.ndarray  # (P, R) multiplicative practice effects
    pack_qty: np.ndarray  # (R, K) quantities (0 where unused)
    pack_logp: np.ndarray  # (R, K) log base probabilities (-inf where unused)
    pack_z: np.ndarray  # (R, K) standardised log quantity
    course_of_row: np.ndarray  # (R,) index into _COURSES
    practice_tilt: np.ndarray  # (P, 3) pack-size tilt by course type
    shape: np.ndarray  # (R,) gamma shape of month-to-month noise
    sub_icb_of_practice: np.ndarray  # (P,) index of each practice's sub-ICB location
    price_walk: np.ndarray  # (months, R) price multipliers
    outliers: dict[str, np.ndarray]


# Quantities per item above this are doses, not inhalers (OpenPrescribing's inhaler quantity rule).
_MAX_INHALERS_PER_ITEM = 9


def _doses_per_inhaler(formulary: pd.DataFrame) -> np.ndarray:
    """Doses in one inhaler, from a description such as "... 100mcg (200D)"; NaN for non-inhalers."""
    doses = formulary.bnf_description.str.extract(r"\((\d+) ?D\)", expand=False).astype(float)
    inhaler = formulary.bnf_code.str.startswith("03")
    return np.where(inhaler, doses, np.nan)


def _parse_packs(formulary: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parsed = [
        [(float(q), float(w)) for q, w in (p.split(":") for p in s.split(";"))]
        for s in formulary.packs
    ]
    k = max(len(p) for p in parsed)
    qty = np.zeros((len(parsed), k))
    logp = np.full((len(parsed), k), -np.inf)
    z = np.zeros((len(parsed), k))
    for i, options in enumerate(parsed):
        q = np.array([o[0] for o in options])
        w = np.array([o[1] for o in options])
        qty[i, : len(q)] = q
        logp[i, : len(q)] = np.log(w / w.sum())
        if len(q) > 1 and np.ptp(np.log(q)) > 0:
            lq = np.log(q)
            z[i, : len(q)] = (lq - lq.mean()) / lq.std()
    return qty, logp, z


def _build_model(orgs: Organisations, n_months: int) -> _Model:
    formulary = _formulary()
    weights_by_group = _age_weights()
    unknown = sorted(set(formulary.weight_group) - set(weights_by_group))
    if unknown:
        raise ValueError(f"The synthetic formulary uses unknown weight groups: {unknown}.")
    unknown = sorted(set(formulary.drug_class) - set(_CLASS_EFFECTS))
    if unknown:
        raise ValueError(f"The synthetic formulary uses unknown drug classes: {unknown}.")
    groups = sorted(set(formulary.weight_group))
    weights = np.stack([weights_by_group[g] for g in groups])  # (G, 2, 9)
    group_of_row = np.array([groups.index(g) for g in formulary.weight_group])

    # Rates in the table are items per 1,000 patients a month for a list with England's mix.
    ref = _MIX_2016.T / _MIX_2016.sum()  # (2, 9) shares
    weight_per_patient = (weights * ref[None]).sum(axis=(1, 2))  # (G,)
    rate_per_unit = formulary.item_rate.to_numpy(float) / 1000.0 / weight_per_patient[group_of_row]

    rng = _rng(orgs.seed, _STREAM_EFFECTS)
    p = orgs.practices
    n_p, n_r = len(p), len(formulary)
    sub_codes = p.sub_icb_code.to_numpy()
    sub_index = np.unique(sub_codes, return_inverse=True)[1]
    n_sub = int(sub_index.max()) + 1
    log_dep = np.log(p.deprivation_score.to_numpy(float))
    z_dep = (log_dep - log_dep.mean()) / (log_dep.std() or 1.0)
    beds_rate = p.care_home_beds.to_numpy(float) / p.list_size.to_numpy(float) * 1000.0
    z_beds = (beds_rate - beds_rate.mean()) / (beds_rate.std() or 1.0)

    classes = list(_CLASS_EFFECTS)
    class_log = np.zeros((n_p, len(classes)))
    for j, name in enumerate(classes):
        ce = _CLASS_EFFECTS[name]
        term = (
            rng.normal(0.0, ce.practice_sd, n_p)
            + rng.normal(0.0, ce.area_sd, n_sub)[sub_index]
            + ce.deprivation * z_dep
            + ce.care_homes * np.clip(z_beds, -3, 3)
        )
        class_log[:, j] = term - term.mean()
    # children carry their parent's effect
    full_class_log = class_log.copy()
    for j, name in enumerate(classes):
        parent = _CLASS_EFFECTS[name].parent
        if parent:
            full_class_log[:, j] += class_log[:, classes.index(parent)]

    outliers: dict[str, np.ndarray] = {}
    n_out = max(1, int(round(_OUTLIER_RATE * n_p)))
    chosen = rng.choice(n_p, size=2 * n_out, replace=False)
    for k, (name, factor) in enumerate(_OUTLIERS.items()):
        who = np.sort(chosen[k * n_out : (k + 1) * n_out])
        outliers[name] = who
        for j, cname in enumerate(classes):
            if cname == name or _CLASS_EFFECTS[cname].parent == name:
                # an outlier's level is set, not added, so luck cannot hide it
                full_class_log[who, j] = math.log(factor)

    class_of_row = np.array([classes.index(c) for c in formulary.drug_class])
    row_sd = formulary.row_sd.to_numpy(float)
    general = rng.normal(0.0, _GENERAL_PRACTICE_SD, n_p)
    row_practice = rng.standard_normal((n_p, n_r)) * row_sd[None, :]
    row_area = (rng.standard_normal((n_sub, n_r)) * (0.5 * row_sd)[None, :])[sub_index]
    log_effect = general[:, None] + full_class_log[:, class_of_row] + row_practice + row_area
    # centre each row's effect on the log scale, then rescale so its mean multiplier is 1
    effect = np.exp(log_effect - log_effect.mean(axis=0, keepdims=True))
    effect /= effect.mean(axis=0, keepdims=True)

    qty, logp, z = _parse_packs(formulary)
    course_of_row = np.array([_COURSES.index(c) for c in formulary.course])
    practice_tilt = np.column_stack([rng.normal(0.0, _COURSE_TILT_SD[c], n_p) for c in _COURSES])
    shape = np.where(formulary.course.to_numpy() == "acute", 25.0, 80.0)

    price_rng = _rng(orgs.seed, _STREAM_PRICES)
    price_walk = np.exp(np.cumsum(price_rng.normal(0.0, 0.012, (n_months, n_r)), axis=0))

    return _Model(
        formulary=formulary,
        weights=weights,
        group_of_row=group_of_row,
        rate_per_unit=rate_per_unit,
        effect=effect,
        pack_qty=qty,
        pack_logp=logp,
        pack_z=z,
        course_of_row=course_of_row,
        practice_tilt=practice_tilt,
        shape=shape,
        sub_icb_of_practice=sub_index,
        price_walk=price_walk,
        outliers=outliers,
    )


def _split_packs(
    model: _Model,
    rng: np.random.Generator,
    practice: np.ndarray,
    row: np.ndarray,
    items: np.ndarray,
    years: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split each (practice, presentation) item count across pack sizes.

    Returns the index of the source cell, the pack option and the items for every non-empty
    (cell, pack) pair, in cell order then ascending quantity.
    """
    course = model.course_of_row[row]
    shift = np.where(course == _COURSES.index("acute"), _ACUTE_TILT_TREND * years, 0.0)
    tilt = model.practice_tilt[practice, course] + shift
    logits = model.pack_logp[row] + tilt[:, None] * model.pack_z[row]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    split = rng.multinomial(items, probs)
    cell, option = np.nonzero(split)
    return cell, option, split[cell, option]


def _dictionary(indices: np.ndarray, values) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(np.asarray(indices, dtype=np.int32)), pa.array(list(values), type=pa.string())
    )


def _epd_month(
    model: _Model,
    orgs: Organisations,
    counts: np.ndarray,
    month_index: int,
    year: int,
    month: int,
) -> pa.Table:
    """One month of EPD rows for every practice and out-of-hours service."""
    rng = _rng(orgs.seed, _STREAM_MONTH + month_index)
    f = model.formulary
    years = month_index / 12.0
    pop9 = np.zeros((counts.shape[0], 2, 9))
    np.add.at(pop9, (slice(None), slice(None), _QUINARY_TO_STARPU), counts)
    weighted = np.einsum("psb,gsb->pg", pop9, model.weights)  # (P, G)
    time_factor = (
        f.trend.to_numpy(float) ** years
        * _seasonal_factor(f.season.to_numpy(), f.season_amplitude.to_numpy(float), month)
        * _working_day_factor(year, month)
    )
    rate = model.rate_per_unit * time_factor
    mu = weighted[:, model.group_of_row] * rate[None, :] * model.effect
    practice_month = rng.gamma(
        _PRACTICE_MONTH_SHAPE, 1.0 / _PRACTICE_MONTH_SHAPE, size=(mu.shape[0], 1)
    )
    n_sub = int(model.sub_icb_of_practice.max()) + 1
    sub_icb_month = np.exp(  # mean 1: the log-normal's mean is exp(mu + sd^2 / 2)
        rng.normal(-0.5 * _SUB_ICB_MONTH_SD**2, _SUB_ICB_MONTH_SD, size=n_sub)
    )[model.sub_icb_of_practice, None]
    lam = mu * (practice_month * sub_icb_month) * rng.gamma(
        model.shape, 1.0 / model.shape, size=mu.shape
    )
    items = rng.poisson(lam)
    practice, row = np.nonzero(items)
    cell, option, n_items = _split_packs(model, rng, practice, row, items[practice, row], years)
    cc = practice[cell]
    r = row[cell]
    qty = model.pack_qty[r, option]

    # Out-of-hours services issue acute courses: the commonest pack only.
    ooh = orgs.out_of_hours
    ooh_rate = f.ooh_rate.to_numpy(float)
    ooh_rows = np.flatnonzero(ooh_rate > 0)
    if len(ooh) and len(ooh_rows):
        mu_ooh = (
            ooh.population.to_numpy(float)[:, None]
            * _OOH_SHARE
            * (f.item_rate.to_numpy(float) / 1000.0 * ooh_rate * time_factor)[None, ooh_rows]
        )
        ooh_items = rng.poisson(mu_ooh)
        oi, oj = np.nonzero(ooh_items)
        o_rows = ooh_rows[oj]
        o_option = np.argmax(model.pack_logp[o_rows], axis=1)
        cc = np.concatenate([cc, len(orgs.practices) + oi])
        r = np.concatenate([r, o_rows])
        qty = np.concatenate([qty, model.pack_qty[o_rows, o_option]])
        n_items = np.concatenate([n_items, ooh_items[oi, oj]])

    n_items = n_items.astype(np.int64)
    total_quantity = qty * n_items
    # An inhaler pack option above 9 is a quantity in doses, as some real rows are: each unit is
    # one dose, so its price and ADQs are those of an inhaler divided by its doses.
    doses = _doses_per_inhaler(f)[r]
    per_unit = np.where((qty > _MAX_INHALERS_PER_ITEM) & ~np.isnan(doses), doses, 1.0)
    price = f.nic_per_unit.to_numpy(float)[r] * model.price_walk[month_index, r] / per_unit
    nic = np.maximum(np.round(total_quantity * price, 2), 0.01)
    actual_cost = np.round(nic * _DISCOUNT_FACTOR + _CONTAINER_ALLOWANCE * n_items, 5)
    adq_usage = np.round(total_quantity * f.adq_per_unit.to_numpy(float)[r] / per_unit, 3)

    centres = _cost_centres(orgs)
    n_rows = len(r)
    chem_codes = f.bnf_code.str[:9]
    chapters = f.bnf_code.str[:2].map(lambda c: f"{c}: {CHAPTER_NAMES.get(c, 'Other')}")
    columns = {
        "YEAR_MONTH": pa.array(np.full(n_rows, year * 100 + month, dtype=np.int64)),
        "REGIONAL_OFFICE_NAME": _dictionary(cc, centres["region_name"]),
        "REGIONAL_OFFICE_CODE": _dictionary(cc, centres["region_code"]),
        "ICB_NAME": _dictionary(cc, centres["icb_name"]),
        "ICB_CODE": _dictionary(cc, centres["icb_code"]),
        "PCO_NAME": _dictionary(cc, centres["pco_name"]),
        "PCO_CODE": _dictionary(cc, centres["pco_code"]),
        "PRACTICE_NAME": _dictionary(cc, centres["practice_name"]),
        "PRACTICE_CODE": _dictionary(cc, centres["practice_code"]),
        "ADDRESS_1": _dictionary(np.zeros(n_rows), [""]),
        "ADDRESS_2": _dictionary(np.zeros(n_rows), [""]),
        "ADDRESS_3": _dictionary(np.zeros(n_rows), [""]),
        "ADDRESS_4": _dictionary(np.zeros(n_rows), [""]),
        "POSTCODE": _dictionary(cc, centres["postcode"]),
        "BNF_CHEMICAL_SUBSTANCE": _dictionary(r, chem_codes),
        "CHEMICAL_SUBSTANCE_BNF_DESCR": _dictionary(r, f.chemical_name),
        "BNF_CODE": _dictionary(r, f.bnf_code),
        "BNF_DESCRIPTION": _dictionary(r, f.bnf_description),
        "BNF_CHAPTER_PLUS_CODE": _dictionary(r, chapters),
        "QUANTITY": pa.array(qty),
        "ITEMS": pa.array(n_items),
        "TOTAL_QUANTITY": pa.array(total_quantity),
        "ADQUSAGE": pa.array(adq_usage),
        "NIC": pa.array(nic),
        "ACTUAL_COST": pa.array(actual_cost),
        "UNIDENTIFIED": _dictionary(np.zeros(n_rows), ["N"]),
    }
    return pa.table(columns)


def _cost_centres(orgs: Organisations) -> dict[str, list[str]]:
    """EPD organisation columns for practices followed by out-of-hours services."""
    both = pd.concat([orgs.practices, orgs.out_of_hours], ignore_index=True)
    pco_code = np.where(
        both.sub_icb_code.str.len() == 3, both.sub_icb_code + "00", both.sub_icb_code
    )
    return {
        "region_name": both.region_name.str.upper().tolist(),
        "region_code": both.region_code.tolist(),
        "icb_name": both.icb_name.str.upper().tolist(),
        "icb_code": both.icb_code.tolist(),
        "pco_name": both.sub_icb_name.str.upper().tolist(),
        "pco_code": list(pco_code),
        "practice_name": both.practice_name.tolist(),
        "practice_code": both.practice_code.tolist(),
        "postcode": both.postcode.tolist(),
    }


# --------------------------------------------------------------------------------------------
# Other files
# --------------------------------------------------------------------------------------------


def _extract_date(year: int, month: int, style: str) -> str:
    name = calendar.month_abbr[month]
    return f"01{name.upper()}{year}" if style == "upper" else f"01{name}{year}"


def _list_size_table(orgs: Organisations, counts: np.ndarray, year: int, month: int) -> pa.Table:
    """The quinary list-size file for one month, in NHS Digital's row order per practice."""
    n_p = counts.shape[0]
    n_b = len(QUINARY_BANDS)
    # per practice: ALL/ALL, FEMALE bands, FEMALE/ALL, MALE bands, MALE/ALL
    female, male = counts[:, 1, :], counts[:, 0, :]
    values = np.column_stack(
        [counts.sum(axis=(1, 2)), female, female.sum(axis=1), male, male.sum(axis=1)]
    )
    per = values.shape[1]
    sex = ["ALL"] + ["FEMALE"] * (n_b + 1) + ["MALE"] * (n_b + 1)
    age = ["ALL"] + list(QUINARY_BANDS) + ["ALL"] + list(QUINARY_BANDS) + ["ALL"]
    practice_idx = np.repeat(np.arange(n_p), per)
    slot = np.tile(np.arange(per), n_p)
    p = orgs.practices
    n_rows = n_p * per
    return pa.table(
        {
            "PUBLICATION": _dictionary(np.zeros(n_rows), [PUBLICATION]),
            "EXTRACT_DATE": _dictionary(np.zeros(n_rows), [_extract_date(year, month, "upper")]),
            "ORG_TYPE": _dictionary(np.zeros(n_rows), ["GP"]),
            "ORG_CODE": _dictionary(practice_idx, p.practice_code),
            "ONS_CODE": _dictionary(np.zeros(n_rows), [""]),
            "POSTCODE": _dictionary(practice_idx, p.postcode),
            "SEX": _dictionary(slot, sex),
            "AGE_GROUP_5": _dictionary(slot, age),
            "NUMBER_OF_PATIENTS": pa.array(values.reshape(-1).astype(np.int64)),
        }
    )


def _map_table(orgs: Organisations, year: int, month: int) -> pa.Table:
    p = orgs.practices
    n = len(p)
    return pa.table(
        {
            "PUBLICATION": [PUBLICATION] * n,
            "EXTRACT_DATE": [_extract_date(year, month, "title")] * n,
            "PRACTICE_CODE": p.practice_code.tolist(),
            "PRACTICE_NAME": p.practice_name.tolist(),
            "PRACTICE_POSTCODE": p.postcode.tolist(),
            "PCN_CODE": p.pcn_code.tolist(),
            "PCN_NAME": p.pcn_name.tolist(),
            "ONS_SUB_ICB_LOCATION_CODE": p.ons_sub_icb_code.tolist(),
            "SUB_ICB_LOCATION_CODE": p.sub_icb_code.tolist(),
            "SUB_ICB_LOCATION_NAME": p.sub_icb_name.tolist(),
            "ONS_ICB_CODE": p.ons_icb_code.tolist(),
            "ICB_CODE": p.icb_code.tolist(),
            "ICB_NAME": p.icb_name.tolist(),
            "ONS_COMM_REGION_CODE": p.ons_region_code.tolist(),
            "COMM_REGION_CODE": p.region_code.tolist(),
            "COMM_REGION_NAME": p.region_name.tolist(),
            "SUPPLIER_NAME": p.supplier.tolist(),
        }
    )


def _attributes_table(orgs: Organisations) -> pa.Table:
    p = orgs.practices
    return pa.table(
        {
            "PRACTICE_CODE": p.practice_code.tolist(),
            "DEPRIVATION_SCORE": p.deprivation_score.to_numpy(float),
            "RURAL": p.rural.tolist(),
            "CARE_HOME_BEDS": p.care_home_beds.to_numpy(np.int64),
        }
    )


def _write_csv_atomic(table: pa.Table, path: Path, quote_strings: bool) -> None:
    """Write ``table`` as CSV with a plain header line, via a temporary file and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write((",".join(table.column_names) + "\n").encode("utf-8"))
            options = pacsv.WriteOptions(
                include_header=False, quoting_style="needed" if quote_strings else "none"
            )
            pacsv.write_csv(table, handle, options)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_text_atomic(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def _months(end_month: str, n_months: int) -> list[tuple[int, int]]:
    if not isinstance(end_month, str) or not _MONTH_RE.match(end_month):
        raise ValueError(f"end_month must look like '2026-09' (YYYY-MM), not {end_month!r}.")
    if isinstance(n_months, bool) or not isinstance(n_months, (int, np.integer)):
        raise ValueError(f"n_months must be a whole number, not {n_months!r}.")
    if not 1 <= n_months <= 240:
        raise ValueError(f"n_months must be between 1 and 240, not {n_months}.")
    year, month = (int(x) for x in end_month.split("-"))
    end = year * 12 + month - 1
    return [((end - k) // 12, (end - k) % 12 + 1) for k in range(n_months - 1, -1, -1)]


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def generate_synthetic(
    out_dir: Path,
    scale: str = "national",
    seed: int = 42,
    end_month: str = "2026-09",
    n_months: int = 24,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Write a complete synthetic data set in the published NHS file formats.

    Parameters
    ----------
    out_dir : pathlib.Path
        Folder to write into (created if needed). Existing files of the same names are replaced.
    scale : str
        ``"national"`` (England-sized, about 6,200 practices) or ``"small"`` (about 120
        practices, for tests); see :data:`SCALES`.
    seed : int
        Non-negative seed. The same seed, scale and months give byte-identical files.
    end_month : str
        Last month to generate, ``"YYYY-MM"``.
    n_months : int
        Number of consecutive months ending at ``end_month`` (1 to 240).
    progress : callable, optional
        Called with short messages such as ``"writing EPD 2025-03 (6/24)"``.

    Returns
    -------
    dict
        ``counts`` (regions, icbs, sub_icbs, pcns, practices, out-of-hours cost centres),
        ``months`` (``"YYYY-MM"`` strings), ``rows`` per file type (``epd``, ``list_sizes``,
        ``practice_map``, ``practice_attributes``), ``files`` written, ``out_dir``, ``scale``,
        ``seed`` and ``seconds`` taken.

    Raises
    ------
    ValueError
        For an unknown scale, a negative or non-integer seed, or a malformed month range.

    Notes
    -----
    ``synthetic_manifest.json`` is written last, so its presence marks a complete set. All
    organisation names and codes are invented: practice codes start with letters no English
    practice uses, sub-ICB codes avoid every real CCG and sub-ICB code, ICB codes are
    ``Q`` + digit + letter and region codes are Y71 to Y77.

    Examples
    --------
    >>> import tempfile
    >>> summary = generate_synthetic(Path(tempfile.mkdtemp()), scale="small", n_months=2)
    >>> summary["counts"]["regions"]
    2
    """
    started = time.perf_counter()
    spec = _check_scale(scale)
    seed = _check_seed(seed)
    months = _months(end_month, n_months)
    out_dir = Path(out_dir)
    say = progress or (lambda message: None)

    say(f"building {spec.name} organisations (seed {seed})")
    orgs = build_organisations(spec.name, seed)
    model = _build_model(orgs, len(months))

    rows = {"epd": 0, "list_sizes": 0, "practice_map": 0, "practice_attributes": 0}
    files: list[str] = []
    for k, (year, month) in enumerate(months):
        label = f"{year}-{month:02d}"
        counts = practice_list_counts(orgs, k)
        say(f"writing EPD {label} ({k + 1}/{len(months)})")
        epd = _epd_month(model, orgs, counts, k, year, month)
        name = f"epd/EPD_{year}{month:02d}.csv"
        _write_csv_atomic(epd, out_dir / name, quote_strings=True)
        rows["epd"] += epd.num_rows
        files.append(name)
        lists = _list_size_table(orgs, counts, year, month)
        name = f"list_sizes/gp-reg-pat-prac-quin-age_{year}{month:02d}.csv"
        _write_csv_atomic(lists, out_dir / name, quote_strings=False)
        rows["list_sizes"] += lists.num_rows
        files.append(name)

    last_year, last_month = months[-1]
    say("writing organisation files")
    mapping = _map_table(orgs, last_year, last_month)
    _write_csv_atomic(
        mapping, out_dir / "organisations/gp-reg-pat-prac-map.csv", quote_strings=False
    )
    rows["practice_map"] = mapping.num_rows
    attributes = _attributes_table(orgs)
    _write_csv_atomic(
        attributes, out_dir / "organisations/practice_attributes.csv", quote_strings=False
    )
    rows["practice_attributes"] = attributes.num_rows
    files += ["organisations/gp-reg-pat-prac-map.csv", "organisations/practice_attributes.csv"]

    month_labels = [f"{y}-{m:02d}" for y, m in months]
    manifest = {
        "synthetic": True,
        "generator": "moopt.sources.synthetic",
        "seed": seed,
        "scale": spec.name,
        "months": month_labels,
        "counts": orgs.counts,
        "rows": rows,
        "files": files,
        "notice": SYNTHETIC_NOTICE,
    }
    _write_text_atomic(json.dumps(manifest, indent=2) + "\n", out_dir / "synthetic_manifest.json")
    seconds = round(time.perf_counter() - started, 2)
    say(f"done in {seconds:.1f} s: {rows['epd']:,} EPD rows")
    return {
        "out_dir": str(out_dir),
        "scale": spec.name,
        "seed": seed,
        "counts": orgs.counts,
        "months": month_labels,
        "rows": rows,
        "files": files + ["synthetic_manifest.json"],
        "seconds": seconds,
    }
