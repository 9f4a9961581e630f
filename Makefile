# Two commands do all the set-up on a fresh machine:
#   make reproduce   the papers' figures at CPU scale (writes outputs/); `make bench` runs the benchmarks
#   make test        lint, type check and the test suite (what CI runs)
# Also: make docs (the documentation site, strict), make lint, make test-latest (newest releases).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LATEST_VENV ?= .venv-latest
LATEST_PY := $(LATEST_VENV)/bin/python
OUT ?= outputs
PYTEST_ARGS ?=
export MALLOC_MMAP_THRESHOLD_ ?= 4000000000
export MALLOC_TRIM_THRESHOLD_ ?= 4000000000
# XLA allocates from worker threads with their own malloc arenas; one arena keeps its large buffers
# mapped between calls (measured: 3.4× less CPU time for CNN per-example gradients at k = 128).
export MALLOC_ARENA_MAX ?= 1

.PHONY: test test-paper test-latest lint docs reproduce reproduce-cpu reproduce-paper bench system-deps clean

$(VENV)/.stamp-core: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,experiments,envs,docs]'
	@touch $@

$(VENV)/.stamp-bench: $(VENV)/.stamp-core
	$(PY) -m pip install -q -e '.[bench]'
	@touch $@

# envpool's ProcGen links against Qt5 (Debian's libqt5gui5). Installed when we can; a clear note when not.
system-deps:
	@if ldconfig -p 2>/dev/null | grep -q libQt5Gui; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian's libqt5gui5 (needed by envpool's ProcGen)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libqt5gui5 >/dev/null) \
	    || echo "WARNING: could not install libqt5gui5; ProcGen environments will not load. Fix: sudo apt-get install libqt5gui5"; \
	else echo "NOTE: libqt5gui5 is missing; ProcGen environments need it. Fix: sudo apt-get install libqt5gui5"; fi

# Two pytest workers on 2 cores: one BLAS thread each (flax's orthogonal init stalls on an oversubscribed OpenBLAS).
# ruff (pyflakes, pycodestyle, bugbear, isort; settings in pyproject.toml) on the whole tree, and mypy on tdjax/.
lint: $(VENV)/.stamp-core
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The documentation site in site/ (strict: a broken link, cross-reference or page missing from the nav fails).
docs: $(VENV)/.stamp-core
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# The tests' tiny configs spend most of their time compiling: XLA:CPU's LLVM backend at -O0 compiles
# faster (measured, whole suite on 2 quiet cores: 19.2 → 13.5 min, CPU time 37 → 26 min); every test passes
# at -O0 as at the default level. Subprocess tests keep the flag and add their fake-device count.
# A fresh JAX compilation cache per run, shared by both workers and the subprocess tests, so a program
# that several tests compile is compiled once (measured: 16.9 → 14.2 min, CPU time 29.1 → 24.5 min).
# It is deleted after the run, so no run sees another's programs.
test: lint system-deps
	cache=$$(mktemp -d) && trap 'rm -rf "$$cache"' EXIT && \
	JAX_COMPILATION_CACHE_DIR="$$cache" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.3 \
	XLA_FLAGS="--xla_backend_optimization_level=0 $$XLA_FLAGS" OPENBLAS_NUM_THREADS=1 \
	  $(PY) -m pytest -q -n 2 -m "not paper_scale" $(PYTEST_ARGS)

test-paper: $(VENV)/.stamp-core system-deps
	$(PY) -m pytest -q -m paper_scale $(PYTEST_ARGS)

# The test suite against the newest releases of every dependency, ceilings ignored, in a separate venv
# (what a user installing tomorrow gets). Not part of `make test`.
test-latest: system-deps
	@test -x $(LATEST_PY) || $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_PY) -m pip install -q --upgrade pip
	$(LATEST_PY) -m pip install -q --upgrade $$($(LATEST_PY) .ci/latest_requirements.py dev experiments envs docs)
	$(LATEST_PY) -m pip install -q --no-deps -e .
	@$(LATEST_PY) -c "import jax, flax, optax; print('testing against jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__)"
	OPENBLAS_NUM_THREADS=1 $(LATEST_PY) -m pytest -q -n 2 -m "not paper_scale" $(PYTEST_ARGS)

# The figures only (about 1.5 hours on 2 cores at smoke scale, README.md); the benchmarks are `make bench`.
reproduce: $(VENV)/.stamp-core system-deps
	$(PY) -m experiments.run_all --out $(OUT)

# The full CPU scale of the training figures (Fig. 3, 8, 12 each under ~15 min on 2 cores; Fig. 4 ~50 min),
# without the benchmarks.
reproduce-cpu: $(VENV)/.stamp-core system-deps
	$(PY) -m experiments.run_all --scale cpu --out $(OUT)/cpu

# Paper-scale configs (Atari/ProcGen through envpool): meant for a GPU machine.
reproduce-paper: $(VENV)/.stamp-core system-deps
	$(PY) -m experiments.run_all --scale paper --out $(OUT)/paper

# The benchmarks (more than half an hour on 2 cores; see benchmarks/RESULTS.md).
bench: $(VENV)/.stamp-bench
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(OUT) .pytest_cache site
