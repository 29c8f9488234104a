# Set-up is part of every target: `make demo` and `make test` work on a fresh machine and are
# no-ops for the install step when .venv is already up to date (stamp files track the requirements).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`; each gets cores/workers torch threads (tests/conftest.py).
TEST_WORKERS ?= 2

export GRADIO_ANALYTICS_ENABLED ?= False
export YOLO_OFFLINE ?= 1
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: install install-dev demo test test-fast lint format bench bench-cam browser weights publish clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): requirements.txt pyproject.toml | $(PY)
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@touch $@

$(DEV_STAMP): requirements-dev.txt $(RUNTIME_STAMP)
	$(PIP) install -q -r requirements-dev.txt
	@touch $@

install: $(RUNTIME_STAMP)
install-dev: $(DEV_STAMP)

demo: install
	$(PY) app.py $(ARGS)

# Debian's Chromium for the real-browser tests (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install-dev
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: install-dev browser lint
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: install-dev lint
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

bench: install-dev
	$(PY) benchmarks/run.py $(ARGS)

# CAM faithfulness of the three models on planted-cue data (trains them on the CPU: tens of minutes).
bench-cam: install-dev
	$(PY) benchmarks/cam_faithfulness.py $(ARGS)

# The paper's Figure-5 set (SIB-Net, concatenation, attention; three seeds each, §4.2) trained and assembled into
# weights/<dataset>/, then pushed to a Hub model repo. Rerun `make weights` to resume. See docs/REPRODUCE.md §7.
#   make weights ARGS="--dataset emotic --data-root data/emotic"
#   make publish ARGS="--weights weights/emotic --repo you/sibnet-emotic --dry-run"
weights: install
	$(PY) -m sibnet.recipe $(ARGS)

publish: install
	$(PY) -m sibnet.publish $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
