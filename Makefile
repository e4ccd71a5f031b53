# The three commands a newcomer needs (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup build test bench clean lab

setup:  ## create .venv and install moopt with its test tools and JupyterLab
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,lab]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null

build:  ## synthetic data (if none configured), store, indicators, notebooks, site
	$(BIN)/moopt build

lab:    ## JupyterLab on notebooks/; each notebook reads the last build's store (outputs/store)
	@test -f outputs/store/moopt.duckdb || echo "note: no build yet: run 'make build' first, the notebooks read outputs/store/moopt.duckdb"
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks

test:   ## the test suite (CI runs exactly this)
	$(BIN)/python -m pytest -n 2

bench:  ## performance figures (not part of the tests)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf outputs/data outputs/store outputs/notebooks outputs/csv outputs/quarto outputs/site
