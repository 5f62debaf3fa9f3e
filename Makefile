# Two commands do everything on a fresh machine with only Python: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.workbench-installed

.PHONY: setup demo test test-fast lint bench figures clean

setup: $(STAMP)

# torch==2.13.0 first: it resolves to the CPU build present on these machines, and the package's torch range
# is then already satisfied, so no CUDA build is ever pulled.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	# plotly.js 2.x for the packaged static exporter (kaleido 0.2.1), fetched once from PyPI into the cache
	$(PY) -c "from workbench.static_export import plotlyjs_path; plotlyjs_path()"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/workbench demo --out figures

figures: setup
	$(VENV)/bin/workbench figures --out figures

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not model"

lint: setup
	$(VENV)/bin/ruff check workbench tests benchmarks scripts

bench: setup
	$(PY) benchmarks/harvest.py
	$(PY) benchmarks/generate.py

clean:
	rm -rf $(VENV) .pytest_cache
