# The two commands a new user needs: `make demo` and `make test`.
# Both create the virtual environment in .venv and install the pinned requirements on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test study venv clean-cache

demo: $(STAMP)
	$(PY) -m engine demo

test: $(STAMP)
	$(PY) -m pytest -q

# The audit at the reference paper's scale on rendered PadChest (real reports, synthetic
# images); results in cache/study. Small runs: make study STUDY_ARGS="--max-patients 2000"
STUDY_ARGS ?=
study: $(STAMP)
	$(PY) -m engine study $(STUDY_ARGS)

venv: $(STAMP)

# --no-compile: pip would byte-compile all ~18,700 modules of the requirements (about 60 CPU s
# here); Python compiles the few thousand that a run imports on first use and caches them.
$(STAMP): requirements.txt requirements-dev.txt requirements-data.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile -r requirements-dev.txt
	$(PY) -m pip install -q --no-compile --no-deps -r requirements-data.txt
	touch $(STAMP)

clean-cache:
	find cache -mindepth 1 ! -name README.md -exec rm -rf {} +
