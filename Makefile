# Two commands matter: `make pipeline` (set up, then `dvc repro` on the bundled data) and
# `make test`. Everything else is a convenience.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)
export BENTOML_HOME ?= $(CURDIR)/.bentoml
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_ENABLE_TELEMETRY := false

PORT ?= 3000

.PHONY: setup lock pipeline test test-fast lint serve mlflow-ui plots benchmark clean

setup: $(VENV)/.installed

# Installs exactly the lock: every file checked against its sha256 (pip itself too), nothing resolved
# or fetched beyond it; `pip check` then proves the lock complete. The first line refuses a lock
# that no longer matches requirements*.txt (run `make lock`). The project itself goes in editable,
# built with the locked setuptools and nothing else, for the `mlops-template` command.
$(VENV)/.installed: requirements.txt requirements-serve.txt constraints.txt constraints-serve.txt pyproject.toml
	$(PYTHON) scripts/lock.py --check
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes --no-deps -r constraints.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation --no-index -e .
	$(VENV)/bin/pip check
	touch $@

lock:  ## after editing requirements*.txt: rewrite constraints*.txt, pinned and hashed (needs the index)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python scripts/lock.py $(LOCK_ARGS)

pipeline: setup
	dvc repro

test: setup  ## every tier: unit, integration (real servers), e2e (real dvc in fresh clones)
	python -m pytest

test-fast: setup  ## the unit tier only: no servers, no clones
	python -m pytest tests/unit

lint: setup  ## ruff on the repository; mypy on the packages [tool.mypy] names (core/, serving/)
	ruff check .
	mypy

serve: setup  ## serve the deployed champion on $(PORT), logging to monitoring/inference-log; open unless API_KEYS_FILE=...
	$(if $(API_KEYS_FILE),API_KEYS_FILE=$(abspath $(API_KEYS_FILE))) \
	INFERENCE_LOG_DIR=$(CURDIR)/monitoring/inference-log ROUTING_FILE=$(CURDIR)/deployments/routing.json \
	bentoml serve $$(python -c "import json;print(json.load(open('deployments/champion.json'))['champion']['bento_tag'])") \
	  --port $(PORT)

mlflow-ui: setup
	mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

plots: setup  ## write dvc_plots/index.html (open it in a browser; no browser is needed here)
	dvc plots show

benchmark: setup  ## figures in benchmarks/results/ (run `make pipeline` first for serving)
	python -m benchmarks.pipeline
	python -m benchmarks.serving
	python -m benchmarks.drift
	python -m benchmarks.guard
	python -m benchmarks.poisoning

clean:
	rm -rf .bentoml mlruns mlflow.db dvc_plots
