# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Compile the installed packages to bytecode once. Python reads .pyc files but, where PYTHONDONTWRITEBYTECODE is
# set (as on this project's machines), never writes them, and uv does not compile by default: every process then
# compiled torch & co. from source, ~6 of the ~10 s each app and worker process spent importing
# (docs/performance.md, "Start-up: bytecode"). -qq: a few packages ship files for other Python versions.
COMPILE_DEPS = $(PY) -m compileall -qq -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
COMPILE_OWN = $(PY) -m compileall -qq datatransfer launch aggregate tests bench || true

.PHONY: demo test install clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# uv installs the same releases as pip about 3x faster (docs/performance.md, "Installing"); pip is the fallback
	( $(PY) -m pip install -q --disable-pip-version-check 'uv>=0.5' \
	  && $(VENV)/bin/uv pip install -q --python $(PY) -e '.[test]' ) \
	|| $(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	$(COMPILE_DEPS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(COMPILE_OWN)
	$(PY) -m launch experiment=mini
	$(PY) -m aggregate store.path=runs/mini/store.zarr
	$(PY) -m aggregate.report store.path=runs/mini/store.zarr

# The demo's store, influences and report (a store of an earlier recipe is refused by `make demo`, not replaced)
clean-demo:
	rm -rf runs/mini

# FFCV (the paper-scale data path) is needed by the tests, not by the demo: if it cannot be installed on a
# machine, `make demo` still works. scripts/install_ffcv.sh installs its system libraries (apt) and pip packages.
FFCV_STAMP := $(VENV)/.ffcv-installed

$(FFCV_STAMP): $(STAMP) scripts/install_ffcv.sh
	scripts/install_ffcv.sh $(VENV)
	$(COMPILE_DEPS)
	touch $(FFCV_STAMP)

# Most tests keep one core busy (app start-ups, single-threaded training), so two pytest-xdist workers share the 2
# cores, a test file to a worker (its module fixtures built once, its tests in order; the real-Slurm tests are one
# file, tests/launchers/test_slurm_cluster.py), in the order tests/conftest.py gives the files.
# `make test TEST_WORKERS=0` runs them in this process.
TEST_WORKERS ?= 2

test: $(STAMP) $(FFCV_STAMP)
	$(COMPILE_OWN)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
