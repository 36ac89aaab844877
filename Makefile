# Two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: demo test notebooks bench bench-venv realdata ablations install clean

# The environment itself; each extra below installs into it on top. The installs use uv
# (installed into the venv by pip): the same packages as pip resolves, in about half a minute
# instead of a minute on a fresh machine. --compile-bytecode writes the .pyc files as pip
# does; without them, where PYTHONDONTWRITEBYTECODE is set, every Python process the tests
# start would compile jax and its dependencies from source again (about 6 CPU-seconds each).
# To install with pip instead: make test INSTALL='.venv/bin/python -m pip install -q'
CREATED := $(VENV)/.created
INSTALL ?= $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY)
$(CREATED):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	touch $(CREATED)

# make demo: jaxflows with the [cli] extra (matplotlib for report.png, scikit-learn for the
# bundled digits it trains on).
CLI_STAMP := $(VENV)/.installed-cli
$(CLI_STAMP): $(CREATED) pyproject.toml
	$(INSTALL) -e ".[cli]"
	touch $(CLI_STAMP)

# make test: the [test] extra (it brings [cli] too: the tests run the command line and the docs).
$(STAMP): $(CREATED) pyproject.toml
	$(INSTALL) -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(CLI_STAMP)
	$(PY) -m jaxflows.demo

# --durations=15: the slowest tests, to keep the suite's time in view. worksteal: a worker
# that runs out of tests takes half of what the other still has queued (see conftest.py).
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist worksteal -q --durations=15

# Re-run every tutorial (notebooks/*.py, jupytext percent format) at full size and write its
# .ipynb with outputs; the [notebooks] extra brings jupyterlab, jupytext and the kernel.
NB_STAMP := $(VENV)/.installed-notebooks
$(NB_STAMP): $(STAMP) pyproject.toml
	$(INSTALL) -e ".[notebooks]"
	touch $(NB_STAMP)

notebooks: $(NB_STAMP)
	$(PY) tools/run_notebooks.py

# zuko and torch (CPU) live in their own venv, timed in their own process by make bench when it
# exists: `make bench-venv` builds it (optional; flowjax is timed in the project venv).
$(BENCH_STAMP): benchmarks/requirements-bench.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q -r benchmarks/requirements-bench.txt
	touch $(BENCH_STAMP)

bench-venv: $(BENCH_STAMP)

# flowjax installs beside jaxflows: the report and the ablations train both in one process.
PEERS_STAMP := $(VENV)/.installed-peers
$(PEERS_STAMP): $(STAMP) pyproject.toml
	$(INSTALL) -e ".[peers]"
	touch $(PEERS_STAMP)

realdata: $(PEERS_STAMP)
	$(PY) benchmarks/realdata.py --budget full

ablations: $(PEERS_STAMP)
	$(PY) benchmarks/maf_ablations.py

# Speed: jaxflows and flowjax in one process, calls interleaved (benchmarks/speed.py).
bench: $(PEERS_STAMP)
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache
