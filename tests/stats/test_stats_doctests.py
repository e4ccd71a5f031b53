"""Run the Examples sections of every moopt.stats module as doctests."""

import doctest
import importlib

import pytest

MODULES = [
    "moopt.stats.intervals",
    "moopt.stats.compare",
    "moopt.stats.ranking",
    "moopt.stats.funnels",
    "moopt.stats.peers",
    "moopt.stats.spc",
    "moopt.stats.trends",
    "moopt.stats.savings",
    # The NumPy oracles that check the indicator engine keep their worked examples.
    "oracles.ranking",
    "oracles.rolling",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
