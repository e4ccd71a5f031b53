# The three commands a newcomer needs (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# axe-core, the accessibility checker tests/browser injects into pages (from the npm registry).
AXE_VERSION = 4.12.1
AXE_DIR     = .cache/axe-core

.PHONY: setup browser-tools build test bench clean lab

setup:  ## create .venv and install moopt with its test tools, JupyterLab, PySpark and Dask
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,lab,spark]"
	@command -v java >/dev/null 2>&1 || echo "NOTE: no Java runtime: the PySpark engine test will be skipped (install a JDK 17)."
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@$(MAKE) --no-print-directory browser-tools

# tests/browser drive Debian's Chromium (the system executable; Playwright's own browser
# downloads are never used) and inject axe-core. Each is skipped with a message when it cannot
# be installed here; the browser tests then skip and say why.
browser-tools:  ## Debian's chromium and axe-core for tests/browser
	@if command -v chromium >/dev/null 2>&1; then \
	  echo "browser tests: using $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "browser tests: installing Debian's chromium with apt-get (a few minutes)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "NOTE: apt-get could not install chromium; tests/browser will be skipped."; \
	else \
	  echo "NOTE: chromium is not installed and cannot be installed here (that needs root and"; \
	  echo "      apt-get). tests/browser will be skipped; install Debian's 'chromium' to run them."; \
	fi
	@if grep -qs "axe v$(AXE_VERSION)" $(AXE_DIR)/axe.min.js; then \
	  echo "browser tests: axe-core $(AXE_VERSION) in $(AXE_DIR)"; \
	elif command -v npm >/dev/null 2>&1; then \
	  mkdir -p $(AXE_DIR) && cd $(AXE_DIR) && npm pack --silent axe-core@$(AXE_VERSION) >/dev/null \
	    && tar -xzf axe-core-$(AXE_VERSION).tgz --strip-components=1 package/axe.min.js package/LICENSE \
	    && rm -f axe-core-$(AXE_VERSION).tgz && echo "browser tests: axe-core $(AXE_VERSION) installed" \
	    || echo "NOTE: npm could not fetch axe-core; the accessibility tests will be skipped."; \
	else \
	  echo "NOTE: npm is not installed, so axe-core is not; the accessibility tests will be skipped."; \
	fi

build:  ## synthetic data (if none configured), store, indicators, notebooks, site
	$(BIN)/moopt build

lab:    ## JupyterLab on notebooks/; each notebook reads the last build's store (outputs/store)
	@test -f outputs/store/moopt.duckdb || echo "note: no build yet: run 'make build' first, the notebooks read outputs/store/moopt.duckdb"
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks $$([ "$$(id -u)" = 0 ] && echo --allow-root)  # JupyterLab refuses root without it

test:   ## the test suite (CI runs exactly this)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench:  ## performance figures (not part of the tests)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf outputs/data outputs/store outputs/notebooks outputs/csv outputs/quarto outputs/site outputs/cache outputs/spark
