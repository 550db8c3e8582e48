# Two commands matter: `make pipeline` (set up, then `dvc repro` on the bundled data) and
# `make test`. Everything else is a convenience.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)
export BENTOML_HOME ?= $(CURDIR)/.bentoml
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_ENABLE_TELEMETRY := false

PORT ?= 3000

.PHONY: setup lock pipeline test test-fast lint serve mlflow-ui plots benchmark clean \
	orchestration-setup orchestration-lock orchestrate

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

test: setup orchestration-setup  ## every tier: unit, integration (real servers), e2e (real dvc in fresh clones)
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

# Dagster (orchestration/): an environment of its own, installed from its hashed lock like .venv.
ORCH_VENV ?= .venv-orchestration

orchestration-setup: $(ORCH_VENV)/.installed  ## the orchestration env only (tests, CI)

$(ORCH_VENV)/.installed: orchestration/requirements.txt orchestration/constraints.txt
	$(PYTHON) orchestration/lock.py --check
	$(PYTHON) -m venv $(ORCH_VENV)
	$(ORCH_VENV)/bin/pip install --quiet --require-hashes --no-deps -r orchestration/constraints.txt
	$(ORCH_VENV)/bin/pip check
	touch $@

orchestration-lock:  ## after editing orchestration/requirements.txt: rewrite orchestration/constraints.txt
	$(VENV)/bin/python orchestration/lock.py

orchestrate: setup orchestration-setup  ## Dagster UI, sensors and schedules on $DAGSTER_PORT (else a free port, printed)
	@mkdir -p .dagster && (test -f .dagster/dagster.yaml || cp orchestration/dagster.yaml .dagster/)
	@port=$${DAGSTER_PORT:-$$($(PYTHON) -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")}; \
	echo "Dagster UI: http://127.0.0.1:$$port (runs and history in .dagster/)"; \
	PATH=$(abspath $(ORCH_VENV))/bin:$$PATH DAGSTER_HOME=$(CURDIR)/.dagster MLOPS_REPO=$(CURDIR) \
	  MLOPS_TEMPLATE_PYTHON=$(abspath $(VENV))/bin/python \
	  exec $(ORCH_VENV)/bin/dagster dev -f orchestration/definitions.py -h 127.0.0.1 -p $$port

clean:
	rm -rf .bentoml mlruns mlflow.db dvc_plots
