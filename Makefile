# Chem-PerturBridge: the two README commands and their helpers.
SHELL := /bin/bash
export CPB_HOME ?= $(CURDIR)/.cpb
export DAGSTER_HOME ?= $(CPB_HOME)/dagster
PY := .venv/bin/python
SLURM ?= 0

.PHONY: install demo test test-fast ui bench slurm-up slurm-down clean

install:
	@scripts/install-system
	@scripts/install-python
	@scripts/prepare-home

## make demo: install, then generate the demo world and materialize every asset
demo: install
	$(PY) -m cpb_jobs.demo $(if $(filter 1,$(SLURM)),--compute slurm,)

## make test: install, then the whole suite (R, SLURM, UI included)
test: install
	@scripts/run-tests

ui: install
	.venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $${CPB_UI_PORT:-3000}

bench: install
	$(PY) -m benchmarks.run

slurm-up:
	@scripts/slurm-up

slurm-down:
	@scripts/slurm-down

clean:
	rm -rf $(CPB_HOME)
