# midfreq: `make demo` runs the whole pipeline offline on the bundled recording; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export MIDFREQ_DATA_LAKE ?= $(CURDIR)/data_lake

.PHONY: demo test lint dev validate bench clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: deploy/local/dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp deploy/local/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/midfreq pipeline --corpus recorded --execution-server

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist worksteal --timeout=600 -q --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check .

validate: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m midfreq_assets.dev -w workspace.yaml

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
