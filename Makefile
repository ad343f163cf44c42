# Two commands on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) .venv, install acekit with what it needs, then run.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned to the builds this project is tested with; torchvision is
# needed by the tests, examples and benchmarks (the model zoo).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.acekit-installed
PYTEST_WORKERS ?= 2

.PHONY: setup demo test lint unit slow dot clean

setup: $(STAMP) dot

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# graphviz's `dot` renders the graph pictures; without it acekit writes .dot files.
dot:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq graphviz >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq graphviz >/dev/null 2>&1)) || \
	    echo "acekit: could not install graphviz's 'dot'; pictures will be written as .dot files."; \
	  else \
	    echo "acekit: graphviz's 'dot' binary is missing (install it with your package manager, e.g. 'apt-get install graphviz'); pictures will be written as .dot files."; \
	  fi; }

demo: setup
	$(BIN)/acekit demo

lint: setup
	$(BIN)/ruff check acekit plugins tests examples benchmarks
	$(BIN)/ruff format --check acekit plugins tests examples benchmarks
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS)

test: lint unit

# Whole-model-zoo sweeps: runnable, not part of `make test` (which runs a rotating sample).
# The zoo's results go to zoo-results.jsonl; docs/coverage.md is rendered from them even
# when some models fail, and its table is printed.
slow: setup
	rm -f zoo-results.jsonl
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m slow; status=$$?; \
	  $(BIN)/python -m tests.zoo.report render; exit $$status

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache logs out
