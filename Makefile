# Two commands matter: `make pipeline` (set up, then `dvc repro` on the bundled data) and
# `make test`. Everything else is a convenience.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)
export BENTOML_HOME ?= $(CURDIR)/.bentoml
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_ENABLE_TELEMETRY := false

PORT ?= 3000

.PHONY: setup pipeline test test-fast lint serve mlflow-ui plots benchmark clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-serve.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt -c constraints.txt
	touch $@

pipeline: setup
	dvc repro

test: setup  ## every tier: unit, integration (real servers), e2e (real dvc in fresh clones)
	python -m pytest

test-fast: setup  ## the unit tier only: no servers, no clones
	python -m pytest tests/unit

lint: setup
	ruff check .

serve: setup  ## serve the deployed champion on $(PORT), logging to monitoring/inference-log
	INFERENCE_LOG_DIR=$(CURDIR)/monitoring/inference-log ROUTING_FILE=$(CURDIR)/deployments/routing.json \
	bentoml serve $$(python -c "import json;print(json.load(open('deployments/champion.json'))['champion']['bento_tag'])") \
	  --port $(PORT)

mlflow-ui: setup
	mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

plots: setup
	dvc plots show --open

benchmark: setup  ## figures in benchmarks/results/ (run `make pipeline` first for serving)
	python -m benchmarks.pipeline
	python -m benchmarks.serving
	python -m benchmarks.drift

clean:
	rm -rf .bentoml mlruns mlflow.db dvc_plots
