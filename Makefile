# rxguard — one target per suite; `make pr` runs what a pull request must pass.
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= out
SAMPLES := $(wildcard events/batches/*.csv events/batches/*.jsonl events/batches/*.json)

.PHONY: venv run run-aws test unit integration e2e lint types cfn pr bench eval kb clean

venv:
	@bash scripts/venv.sh

STATE ?= $(OUT)/state

run: venv  ## the main job: screen the sample batches against the persistent local state in $(STATE)
	@echo "rxguard run: state in $(STATE) (kept between runs; rm -rf $(STATE) to start afresh)"
	$(VENV)/bin/rxguard run $(SAMPLES) --state $(STATE) --out $(OUT) --pdf parallel

run-aws: venv  ## the same batches through the real ASL and handlers on moto (AWS-faithful, slow)
	$(VENV)/bin/rxguard run --simulate-aws $(SAMPLES) --out $(OUT)/simulate-aws

test: venv  ## the whole test suite
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest tests/unit

integration: venv
	$(PY) -m pytest tests/integration

e2e: venv
	$(PY) -m pytest tests/e2e

lint: venv
	$(VENV)/bin/ruff check layers tools functions tests bench scripts
	$(VENV)/bin/ruff format --check layers tools functions tests bench scripts
	PYTHONPATH=layers:tools $(VENV)/bin/lint-imports --config .importlinter --no-cache

types: venv
	$(VENV)/bin/mypy

cfn: venv
	$(VENV)/bin/cfn-lint template.yaml

pr: lint types cfn test

bench: venv  ## figures, not pass/fail
	$(PY) -m bench

eval: venv
	$(VENV)/bin/rxguard eval

kb: venv  ## re-import the reference catalogue
	$(VENV)/bin/rxguard kb import rules/reference/monitored_drugs.csv

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache .aws-sam
