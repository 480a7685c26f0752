# Chem-PerturBridge: the two README commands and their helpers.
SHELL := /bin/bash
export CPB_HOME ?= $(CURDIR)/.cpb
export DAGSTER_HOME ?= $(CPB_HOME)/dagster
PY := .venv/bin/python
SLURM ?= 0
DATASETS ?=
DEMO_ARGS := $(if $(strip $(DATASETS)),--datasets $(DATASETS),)

.PHONY: install demo test test-fast ui bench slurm-up slurm-down clean mlflow-ui

install:
	@scripts/install-system
	@scripts/install-python
	@scripts/prepare-home

## make demo: install, then generate the demo world and materialize every asset
demo: install
ifeq ($(SLURM),1)
	@# heavy units (DE strata, pseudobulk plates) as jobs on the local one-node cluster; `make slurm-down` stops it
	@# (slurm-up's exports are taken only when it succeeded: `eval "$$(…)"` alone would hide its failure)
	slurm_env="$$(scripts/slurm-up)" && eval "$$slurm_env" && CPB_COMPUTE=slurm $(PY) -m cpb_jobs.demo $(DEMO_ARGS)
else
	$(PY) -m cpb_jobs.demo $(DEMO_ARGS)
endif

## make test: install, then the whole suite (R, SLURM, UI included)
test: install
	@scripts/run-tests

ui: install
	.venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $${CPB_UI_PORT:-3000}

## make mlflow-ui: the LPM training runs ($CPB_HOME/mlflow) on http://127.0.0.1:5000 (CPB_MLFLOW_PORT)
mlflow-ui:
	@mkdir -p $(CPB_HOME)/mlflow/artifacts
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false .venv/bin/mlflow server --host 127.0.0.1 --port $${CPB_MLFLOW_PORT:-5000} \
	  --workers 1 --backend-store-uri sqlite:///$(CPB_HOME)/mlflow/mlflow.db \
	  --artifacts-destination $(CPB_HOME)/mlflow/artifacts

bench: install
	@# decoupler is a benchmark extra (baseline of the pseudobulk_sc row), not part of the project's install;
	@# 2.2.0 installs without upgrading the pinned anndata/numpy/pandas. Without it the row says so.
	@.venv/bin/pip install -q --disable-pip-version-check 'decoupler==2.2.0' 2>&1 | grep -v 'is ignored: it is neither' || true
	$(PY) -m benchmarks.run

slurm-up:
	@scripts/slurm-up

slurm-down:
	@scripts/slurm-down

clean:
	rm -rf $(CPB_HOME)
