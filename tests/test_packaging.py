"""pyproject.toml (pip) and environment.yml (conda) must ask for the same things."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI names
CONDA_TO_PIP = {"ibis-duckdb": "ibis-framework", "playwright-python": "playwright"}
# quarto and openjdk (Java, for pyspark) have no PyPI package; pip users install them separately
CONDA_ONLY = {"python", "pip", "quarto", "openjdk"}


def _split(spec: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", spec)
    return match.group(1).lower(), match.group(3).replace(" ", "")


def test_pip_and_conda_dependencies_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_specs = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    pip = dict(_split(s) for s in pip_specs)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            assert dep["pip"] == ["-e ."], "the conda environment installs moopt itself with pip -e ."
            continue
        name, version = _split(dep)
        conda[CONDA_TO_PIP.get(name, name)] = version
    for name in CONDA_ONLY:
        conda.pop(name, None)
    assert set(conda) == set(pip), f"only in conda: {set(conda) - set(pip)}; only in pip: {set(pip) - set(conda)}"
    for name, version in pip.items():
        assert conda[name] == version, f"{name}: pip asks for {version!r}, conda for {conda[name]!r}"


def test_environment_lists_what_the_issue_requires():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = {_split(d)[0] for d in env["dependencies"] if isinstance(d, str)}
    for required in ["python", "jupyterlab", "papermill", "pandas", "altair", "vl-convert-python", "statsmodels",
                     "nbconvert", "quarto", "pytest"]:
        assert required in names
