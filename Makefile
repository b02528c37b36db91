# Every target sets itself up: a fresh clone needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck unit docs demo bench test-integration clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,docs]"
	touch $(STAMP)

test: $(STAMP) lint typecheck unit docs

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# -W error: a ResourceWarning or "Task was destroyed but it is pending" fails the run.
unit: $(STAMP)
	$(BIN)/python -X dev -W error::ResourceWarning -m pytest -q -m "not integration"

# The manual (docs/, mkdocs.yml) into site/; strict: a warning (a broken link, a page missing
# from the navigation) fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

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

# Benchmarks: matplotlib (extra "bench") in the project venv for the plot; Mellea 0.7.0 and Mellea
# 0.8.0 each in its own venv, with this project installed beside it. Two Mellea versions cannot share
# an interpreter, so the side-by-side scripts (run from the project venv) drive one worker process per
# engine and alternate them (benchmarks/_harness.py, Worker).
MELLEA_VENV := benchmarks/.mellea-venv
MELLEA08_VENV := benchmarks/.mellea08-venv
BENCH_STAMP := $(VENV)/.bench-installed
MELLEA_STAMP := $(MELLEA_VENV)/.installed
MELLEA08_STAMP := $(MELLEA08_VENV)/.installed

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,docs,bench]"
	touch $(BENCH_STAMP)

$(MELLEA_STAMP): pyproject.toml
	$(PYTHON) -m venv $(MELLEA_VENV)
	$(MELLEA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MELLEA_VENV)/bin/python -m pip install --quiet "mellea==0.7.0" -e .
	touch $(MELLEA_STAMP)

$(MELLEA08_STAMP): pyproject.toml
	$(PYTHON) -m venv $(MELLEA08_VENV)
	$(MELLEA08_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MELLEA08_VENV)/bin/python -m pip install --quiet "mellea==0.8.0" -e .
	touch $(MELLEA08_STAMP)

# Each script prints its table and writes benchmarks/results/<name>.json; render.py writes
# benchmarks/results/README.md and long_output.png from them. Run it on a quiet machine.
bench: $(BENCH_STAMP) $(MELLEA_STAMP) $(MELLEA08_STAMP)
	$(BIN)/python benchmarks/cancel_latency.py
	$(BIN)/python benchmarks/http_cancel.py
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/long_output.py
	$(BIN)/python benchmarks/vs_mellea.py
	$(BIN)/python benchmarks/fanout.py
	$(BIN)/python benchmarks/fanout_paced.py
	$(BIN)/python benchmarks/scheduling.py
	$(BIN)/python benchmarks/telemetry_overhead.py
	$(BIN)/python benchmarks/structured.py
	$(BIN)/python benchmarks/render.py

clean:
	rm -rf $(VENV) site .mypy_cache .pytest_cache .ruff_cache *.egg-info
