# latbench set-up and checks. `make demo` and `make test` create .venv when missing,
# install the CPU PyTorch wheel first (an unpinned torch pulls a multi-GB CUDA build),
# then the project, then run.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
# Elsewhere, point pip at PyTorch's CPU wheel index, e.g. TORCH_PIP_ARGS="--index-url <PyTorch CPU index>"
TORCH_PIP_ARGS ?=
# dev: pytest, pytest-benchmark, ruff, hypothesis, import-linter; ray: the device farm (its tests start a real local Ray cluster)
EXTRAS ?= dev,ray
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.latbench-installed

.PHONY: demo test test-slow bench lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	$(PIP) install -q -e '.[$(EXTRAS)]'
	@touch $(STAMP)

demo: $(STAMP)
	LATBENCH_HOME=$(CURDIR)/.latbench-demo $(VENV)/bin/latbench demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

bench: $(STAMP)
	$(PY) -m pytest benchmarks -q

lint: $(STAMP)
	$(VENV)/bin/ruff check latbench tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .latbench-demo
