# The two commands of the README. Each creates .venv when missing and installs the toolkit (editable, with
# its dev extra) before running; the stamp file makes a second call skip the install unless setup.cfg changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-all realdata bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/imf-kg train --config configs/imf/umls.yaml --run-dir runs/umls-main --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

bench: $(STAMP)
	$(BIN)/python benchmarks/gemm_peak.py
	$(BIN)/python benchmarks/eval_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
