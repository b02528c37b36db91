# Every target sets itself up: a fresh clone needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck unit demo bench test-integration clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# -W error: a ResourceWarning or "Task was destroyed but it is pending" fails the run.
unit: $(STAMP)
	$(BIN)/python -X dev -W error::ResourceWarning -m pytest -q -m "not integration"

demo: $(STAMP)
	$(BIN)/python -m engine demo

# A real OpenAI-compatible server: llama-cpp-python compiles llama.cpp from source (~6 minutes
# on 2 cores, once; pip caches the wheel). gguf writes the tiny random-weight test model.
LLAMA_STAMP := $(VENV)/.llama-installed

$(LLAMA_STAMP): | $(STAMP)
	$(BIN)/python -m pip install --quiet "llama-cpp-python[server]==0.3.36" "gguf>=0.10"
	touch $(LLAMA_STAMP)

test-integration: $(LLAMA_STAMP)
	$(BIN)/python -X dev -W error::ResourceWarning -m pytest -q -m integration

# Benchmarks: matplotlib (extra "bench") in the project venv for the plot; Mellea 0.7.0 in its
# own venv, with this project installed beside it, so vs_mellea.py runs both sides in one process.
MELLEA_VENV := benchmarks/.mellea-venv
BENCH_STAMP := $(VENV)/.bench-installed
MELLEA_STAMP := $(MELLEA_VENV)/.installed

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

$(MELLEA_STAMP): pyproject.toml
	$(PYTHON) -m venv $(MELLEA_VENV)
	$(MELLEA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MELLEA_VENV)/bin/python -m pip install --quiet "mellea==0.7.0" -e .
	touch $(MELLEA_STAMP)

# Each script prints its table and writes benchmarks/results/<name>.json; render.py writes
# benchmarks/results/README.md and long_output.png from them.
bench: $(BENCH_STAMP) $(MELLEA_STAMP)
	$(BIN)/python benchmarks/cancel_latency.py
	$(BIN)/python benchmarks/http_cancel.py
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/long_output.py
	$(BIN)/python benchmarks/fanout.py
	$(MELLEA_VENV)/bin/python benchmarks/vs_mellea.py
	$(BIN)/python benchmarks/render.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info
