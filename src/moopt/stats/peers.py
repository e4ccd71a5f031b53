"""Similar-organisation ("peer") groups and peer benchmarks.

Organisations are compared with the k organisations of the same level that
are most alike on a few population attributes (list size, the share of
patients aged 65 and over, a deprivation score...). Alike means close in
Euclidean distance after each attribute is standardised (z-scored) within the
level, so that no attribute dominates through its units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from moopt.stats._validate import (
    assign_columns,
    check_columns,
    check_dataframe,
    multiplier_values,
    numeric_column,
)

# Rows of the distance matrix computed at once: bounds memory at about
# 8 bytes x block x organisations (under 64 MB for 8,000 practices).
_BLOCK_ROWS = 1000


def assign_peer_groups(
    organisations: pd.DataFrame,
    attributes: Sequence[str],
    k: int = 10,
    org_code: str = "org_code",
    org_level: str = "org_level",
    weights: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Find each organisation's k most similar organisations of the same level.

    Parameters
    ----------
    organisations : pandas.DataFrame
        One row per organisation with its code, level and attributes.
    attributes : sequence of str
        Numeric attribute columns, e.g. ``["list_size", "percent_aged_65_plus",
        "imd_score"]``. Missing values are not allowed.
    k : int, default 10
        Peers per organisation. Levels with k or fewer organisations give each
        organisation all the others.
    org_code, org_level : str
        Column names of the code and the level.
    weights : mapping of str to float, optional
        Relative weight of each attribute in the distance (default 1 each).

    Returns
    -------
    pandas.DataFrame
        Long format, one row per organisation and peer: ``org_level``,
        ``org_code``, ``peer_code``, ``peer_rank`` (1 = most similar) and
        ``distance`` (in standard deviations).

    Raises
    ------
    ValueError
        If a column is missing or not numeric, an attribute is missing for an
        organisation, codes repeat within a level, ``k`` < 1, or a weight is
        negative.

    Notes
    -----
    Method: (1) within each level, z-score each attribute,
    ``(a - mean) / sd`` (population SD; an attribute that is constant within
    the level contributes 0); (2) multiply by the square root of its weight;
    (3) Euclidean distance between every pair of organisations of the level;
    (4) keep the k nearest, the organisation itself excluded; ties are broken
    by organisation code so the result is reproducible. Skewed attributes
    such as list size are often better log-transformed before calling.

    References
    ----------
    Office for National Statistics / NHS England "similar CCGs" and
    Right Care "similar 10" groups use the same nearest-neighbour idea on
    demographic attributes.

    Examples
    --------
    >>> import pandas as pd
    >>> orgs = pd.DataFrame({"org_level": ["sub_icb"] * 4, "org_code": ["A", "B", "C", "D"],
    ...                      "age65": [10.0, 11.0, 20.0, 30.0]})
    >>> assign_peer_groups(orgs, ["age65"], k=1)[["org_code", "peer_code"]].values.tolist()
    [['A', 'B'], ['B', 'A'], ['C', 'B'], ['D', 'C']]
    """
    function = "assign_peer_groups"
    check_dataframe(organisations, function)
    attributes = [attributes] if isinstance(attributes, str) else list(attributes)
    if not attributes:
        raise ValueError(f"{function}: give at least one attribute column.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{function}: k must be a whole number of at least 1, not {k!r}.")
    check_columns(organisations, [org_code, org_level, *attributes], function)
    matrix = np.column_stack([numeric_column(organisations, a, function) for a in attributes])
    missing = ~np.isfinite(matrix)
    if missing.any():
        rows = np.flatnonzero(missing.any(axis=1))[:5]
        codes = organisations[org_code].iloc[rows].tolist()
        raise ValueError(
            f"{function}: attributes are missing or infinite for {int(missing.any(axis=1).sum())} "
            f"organisation(s), e.g. {codes}. Fill or drop them before forming peer groups."
        )
    weight = np.ones(len(attributes))
    if weights is not None:
        unknown = set(weights) - set(attributes)
        if unknown:
            raise ValueError(f"{function}: weights given for unknown attributes {sorted(unknown)}.")
        weight = np.array([float(weights.get(a, 1.0)) for a in attributes])
        if np.any(weight < 0) or not np.any(weight > 0):
            raise ValueError(f"{function}: weights must be non-negative and not all zero.")
    if organisations.duplicated([org_level, org_code]).any():
        dup = organisations.loc[organisations.duplicated([org_level, org_code]), org_code]
        raise ValueError(
            f"{function}: organisation codes repeat within a level, e.g. {dup.iloc[0]!r}; "
            "give one row per organisation."
        )

    pieces = []
    levels = organisations[org_level].to_numpy(dtype=object)
    codes_all = organisations[org_code].astype(str).to_numpy(dtype=object)
    for level in pd.unique(levels):
        rows = np.flatnonzero(levels == level)
        if len(rows) < 2:
            continue
        # Sort by code first so that ties in distance fall back to code order.
        rows = rows[np.argsort(codes_all[rows], kind="stable")]
        x = matrix[rows]
        sd = x.std(axis=0)
        z = np.where(sd > 0, (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)
        z = z * np.sqrt(weight)
        take = min(k, len(rows) - 1)
        squared_norm = (z * z).sum(axis=1)
        for start in range(0, len(rows), _BLOCK_ROWS):
            block = slice(start, min(start + _BLOCK_ROWS, len(rows)))
            d2 = squared_norm[block, None] + squared_norm[None, :] - 2.0 * z[block] @ z.T
            d2 = np.maximum(d2, 0.0)
            own = np.arange(block.start, block.stop)
            d2[np.arange(len(own)), own] = np.inf
            # Stable sort of rounded distances: ties (to rounding) keep code order.
            nearest = np.argsort(np.round(d2, 10), axis=1, kind="stable")[:, :take]
            distance = np.sqrt(np.take_along_axis(d2, nearest, axis=1))
            pieces.append(
                pd.DataFrame(
                    {
                        "org_level": level,
                        "org_code": np.repeat(codes_all[rows[block]], take),
                        "peer_code": codes_all[rows[nearest.ravel()]],
                        "peer_rank": np.tile(np.arange(1, take + 1), len(own)),
                        "distance": distance.ravel(),
                    }
                )
            )
    if not pieces:
        return pd.DataFrame(
            {"org_level": [], "org_code": [], "peer_code": [], "peer_rank": [], "distance": []}
        )
    out = pd.concat(pieces, ignore_index=True)
    return out.sort_values(["org_level", "org_code", "peer_rank"], kind="stable").reset_index(
        drop=True
    )


def calculate_peer_benchmark(
    df: pd.DataFrame,
    peer_groups: pd.DataFrame,
    numerator: str = "numerator",
    denominator: str = "denominator",
    multiplier: float | str = "multiplier",
    keys: Sequence[str] = ("indicator_id", "period", "period_type"),
    org_code: str = "org_code",
    org_level: str = "org_level",
    output: str = "peer_value",
) -> pd.DataFrame:
    """Add the pooled value of each organisation's peers (its own row excluded).

    Parameters
    ----------
    df : pandas.DataFrame
        The tidy indicator table.
    peer_groups : pandas.DataFrame
        Output of :func:`assign_peer_groups`.
    numerator, denominator : str
        Count columns summed over the peers.
    multiplier : float or str, default "multiplier"
        Scale of the value, or a column name.
    keys : sequence of str, default ("indicator_id", "period", "period_type")
        Columns that identify one indicator value apart from the organisation.
    org_code, org_level : str
        Organisation columns.
    output : str, default "peer_value"
        Name of the new column; a second column ``<output>_peers`` counts the
        peers that had a usable denominator.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with ``output`` = sum of the peers' numerators / sum
        of their denominators x multiplier (NaN when the peers have no
        denominator), ready for :func:`moopt.stats.compare.calculate_comparison`
        with ``benchmark="peer_value", prefix="peer"``.

    Raises
    ------
    ValueError
        If a column is missing or not numeric.

    Notes
    -----
    The peer value is a ratio of sums, as an organisation's own value is;
    the organisation is never part of its own benchmark.

    Examples
    --------
    >>> import pandas as pd
    >>> peers = pd.DataFrame({"org_level": ["pcn"] * 2, "org_code": ["A", "B"],
    ...                       "peer_code": ["B", "A"], "peer_rank": [1, 1], "distance": [1.0, 1.0]})
    >>> df = pd.DataFrame({"indicator_id": ["X", "X"], "period": [1, 1], "period_type": ["m", "m"],
    ...     "org_level": ["pcn", "pcn"], "org_code": ["A", "B"],
    ...     "numerator": [1.0, 3.0], "denominator": [10.0, 10.0]})
    >>> calculate_peer_benchmark(df, peers, multiplier=100)["peer_value"].tolist()
    [30.0, 10.0]
    """
    function = "calculate_peer_benchmark"
    check_dataframe(df, function)
    check_dataframe(peer_groups, function)
    keys = list(keys)
    check_columns(df, [numerator, denominator, org_code, org_level, *keys], function)
    check_columns(peer_groups, ["org_level", "org_code", "peer_code"], function)
    if df.duplicated([org_level, org_code, *keys]).any():
        raise ValueError(
            f"{function}: rows repeat for the same organisation and {', '.join(keys)}; "
            "give one row per organisation and indicator value."
        )
    x = numeric_column(df, numerator, function)
    n = numeric_column(df, denominator, function)
    scale = multiplier_values(df, multiplier, function)
    usable = np.isfinite(x) & np.isfinite(n) & (n > 0)

    values = df[[org_level, org_code, *keys]].copy()
    values.columns = ["_level", "peer_code", *keys]
    values["_x"] = np.where(usable, x, 0.0)
    values["_n"] = np.where(usable, n, 0.0)
    values["_used"] = usable.astype(np.int64)
    links = peer_groups[["org_level", "org_code", "peer_code"]].rename(
        columns={"org_level": "_level", "org_code": "_org"}
    )
    joined = links.merge(values, on=["_level", "peer_code"], how="inner")
    pooled = (
        joined.groupby(["_level", "_org", *keys], sort=False, dropna=False, observed=True)[
            ["_x", "_n", "_used"]
        ]
        .sum()
        .reset_index()
        .rename(columns={"_level": org_level, "_org": org_code})
    )
    position = df[[org_level, org_code, *keys]].copy()
    position["_row"] = np.arange(len(df))
    matched = position.merge(pooled, on=[org_level, org_code, *keys], how="left")
    matched = matched.sort_values("_row")
    sum_x = matched["_x"].to_numpy(dtype=float, na_value=np.nan)
    sum_n = matched["_n"].to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        peer_value = np.where(sum_n > 0, sum_x / sum_n, np.nan) * scale
    used = matched["_used"].fillna(0).to_numpy(dtype=np.int64)
    return assign_columns(df, {output: peer_value, f"{output}_peers": used})
