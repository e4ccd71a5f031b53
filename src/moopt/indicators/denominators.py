"""Population denominators: list sizes and STAR-PU.

STAR-PU (specific therapeutic group age-sex related prescribing unit) weights
a practice's list by age and sex: the sum over nine age bands and two sexes
of patients in the band times the group's weight for it. moopt carries the
2013 weights for all 25 therapeutic groups as package data
(``star_pu_weights_2013.csv``: group, band, male weight, female weight).
NHS Digital publishes list sizes in quinary bands (0-4, 5-9, ..., 95+), which
map onto the STAR-PU bands by their lower age.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

WEIGHTS_FILE = Path(__file__).with_name("star_pu_weights_2013.csv")
STAR_PU_BANDS = ("0-4", "5-14", "15-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+")


def star_pu_band(age_lower: int) -> str:
    """The STAR-PU band holding a quinary band that starts at ``age_lower``."""
    if age_lower < 5:
        return "0-4"
    if age_lower >= 75:
        return "75+"
    start = 5 + 10 * ((age_lower - 5) // 10)
    return f"{start}-{start + 9}"


@lru_cache(maxsize=1)
def star_pu_weights() -> pd.DataFrame:
    """Long table of weights: star_pu_group, age_band, sex ('male'/'female'), weight."""
    wide = pd.read_csv(WEIGHTS_FILE, dtype={"star_pu_group": str, "age_band": str})
    long = wide.melt(id_vars=["star_pu_group", "age_band"], value_vars=["male", "female"],
                     var_name="sex", value_name="weight")
    return long


@lru_cache(maxsize=1)
def star_pu_groups() -> tuple[str, ...]:
    return tuple(sorted(pd.read_csv(WEIGHTS_FILE, usecols=["star_pu_group"])["star_pu_group"].unique()))


def quinary_weights(groups: list[str]) -> pd.DataFrame:
    """Weights by the lower age of a band: star_pu_group, sex, age_lower (0 ... 120), weight.

    Every whole age is listed, so quinary bands, single years of age and the nine NHSBSA
    bands (each within one STAR-PU band) all find their weight by their lower age.
    """
    weights = star_pu_weights()
    weights = weights[weights["star_pu_group"].isin(groups)]
    lowers = pd.DataFrame({"age_lower": list(range(0, 121))})
    lowers["age_band"] = lowers["age_lower"].map(star_pu_band)
    return lowers.merge(weights, on="age_band")[["star_pu_group", "sex", "age_lower", "weight"]]
