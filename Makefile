# Two commands matter: `make pipeline` (set up, then `dvc repro` on the bundled data) and
# `make test`. Everything else is a convenience.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)
export BENTOML_HOME ?= $(CURDIR)/.bentoml
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_ENABLE_TELEMETRY := false

.PHONY: setup pipeline test serve mlflow-ui plots benchmark clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-serve.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt -c constraints.txt
	touch $@

pipeline: setup
	dvc repro

test: setup
	python -m pytest

serve: setup  ## serve the deployed champion on port 3000, logging to monitoring/inference-log
	INFERENCE_LOG_DIR=$(CURDIR)/monitoring/inference-log ROUTING_FILE=$(CURDIR)/deployments/routing.json \
	bentoml serve $$(python -c "import json;print(json.load(open('deployments/champion.json'))['champion']['bento_tag'])") --port 3000

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
