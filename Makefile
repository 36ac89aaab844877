# Two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: demo test notebooks bench bench-venv realdata ablations install clean

# The environment itself; each extra below installs into it on top.
CREATED := $(VENV)/.created
$(CREATED):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	touch $(CREATED)

# make demo: jaxflows with the [cli] extra (matplotlib for report.png, scikit-learn for the
# bundled digits it trains on).
CLI_STAMP := $(VENV)/.installed-cli
$(CLI_STAMP): $(CREATED) pyproject.toml
	$(PY) -m pip install -q -e ".[cli]"
	touch $(CLI_STAMP)

# make test: the [test] extra (it brings [cli] too: the tests run the command line and the docs).
$(STAMP): $(CREATED) pyproject.toml
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(CLI_STAMP)
	$(PY) -m jaxflows.demo

# --durations=15: the slowest tests, to keep the suite's time in view.
test: $(STAMP)
	$(PY) -m pytest -n 2 -q --durations=15

# Re-run every tutorial (notebooks/*.py, jupytext percent format) at full size and write its
# .ipynb with outputs; the [notebooks] extra brings jupyterlab, jupytext and the kernel.
NB_STAMP := $(VENV)/.installed-notebooks
$(NB_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e ".[notebooks]"
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
	$(PY) -m pip install -q -e ".[peers]"
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
