# Every target sets itself up: a fresh clone needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck unit unit-uvloop docs demo bench bench-quick test-integration clean

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

# The same suite on uvloop (extra "speed", installed by dev): the engine and both HTTP backends
# must run on either loop. tests/conftest.py installs uvloop's policy for the test run only.
unit-uvloop: $(STAMP)
	RXLLM_TEST_LOOP=uvloop $(BIN)/python -X dev -W error::ResourceWarning -m pytest -q -m "not integration"

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

# Each script prints its table and writes benchmarks/results/<name>.json, recording the commit (and
# whether the tree was clean), the time and every engine's version; render.py writes
# benchmarks/results/README.md and long_output.png from them and refuses files from different commits.
# Run it on a quiet machine, on a committed tree: about 20 minutes on 2 cores (the README lists each
# script's run time; the whole must stay under 60). bench-quick runs every script's --quick mode
# (a few minutes) into .bench-quick/, leaving the committed results alone.
BENCH_SCRIPTS := cancel_latency http_cancel throughput long_output vs_mellea fanout fanout_paced paced_cpu http_fanout scheduling telemetry_overhead gateway structured
QUICK_DIR := .bench-quick

bench: $(BENCH_STAMP) $(MELLEA_STAMP) $(MELLEA08_STAMP)
	for name in $(BENCH_SCRIPTS); do $(BIN)/python benchmarks/$$name.py || exit 1; done
	$(BIN)/python benchmarks/render.py

bench-quick: $(BENCH_STAMP) $(MELLEA_STAMP) $(MELLEA08_STAMP)
	rm -rf $(QUICK_DIR) && mkdir -p $(QUICK_DIR)
	for name in $(BENCH_SCRIPTS); do \
		$(BIN)/python benchmarks/$$name.py --quick --out $(QUICK_DIR)/$$name.json || exit 1; done
	$(BIN)/python benchmarks/render.py --results $(QUICK_DIR)

clean:
	rm -rf $(VENV) site $(QUICK_DIR) .mypy_cache .pytest_cache .ruff_cache *.egg-info
