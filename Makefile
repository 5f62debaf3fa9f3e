# Two commands do everything on a fresh machine with only Python: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.workbench-installed

LOCK := requirements.lock
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: setup demo test test-fast test-latest lock lint bench figures clean

setup: $(STAMP)

# The environment is exactly the lock: every package pinned with its hashes (torch is the 2.13.0 CPU build, so no
# CUDA build is ever pulled), nothing resolved at install time, then the project itself without dependencies.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --require-hashes --no-deps -r $(LOCK)
	rm -rf workbench.egg-info  # stale metadata from an older install would shadow the entry points
	$(PY) -m pip install $(PIP_QUIET) --no-deps --no-build-isolation -e .
	$(PY) -m pip check
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
	$(PY) benchmarks/evaluate.py

# Regenerate the lock from pyproject.toml's ranges (newest releases they allow) for this platform and Python.
# Run `make test` on the result before committing it.
lock:
	test -x .venv-lock/bin/pip-compile || { $(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install $(PIP_QUIET) pip-tools==7.6.2; }
	.venv-lock/bin/pip-compile --quiet --extra dev --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links --output-file $(LOCK) pyproject.toml requirements-build.in

# Not in CI: a separate environment with the newest releases pyproject.toml allows, and the whole suite on it, to
# try upgrades on purpose. Its resolved versions are written to .venv-latest/versions.txt.
test-latest:
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install $(PIP_QUIET) torch==2.13.0
	.venv-latest/bin/pip install $(PIP_QUIET) --upgrade --upgrade-strategy eager -e ".[dev]"
	.venv-latest/bin/pip freeze --exclude-editable > .venv-latest/versions.txt
	.venv-latest/bin/python -m pytest

clean:
	rm -rf $(VENV) .venv-lock .venv-latest .pytest_cache
