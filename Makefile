# Two commands do all set-up:  `make demo`  and  `make test`.
# Both create the virtual environment in .venv on first use (Python 3.10+ and the package
# registries are all they need).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.faceqc-installed

.PHONY: demo test test-fast bench env clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	# insightface ships the sample photo t1.jpg; only its files are used, not its code
	$(PY) -m pip install -q --no-deps insightface==2.1
	# pyiqa for the optional pyiqa backend's tests, without its heavy requirements (transformers,
	# bitsandbytes, datasets...): the metrics faceqc runs need only facexlib (TOPIQ) and einops
	$(PY) -m pip install -q --no-deps pyiqa==0.1.16 facexlib==0.3.0
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/faceqc demo

# everything: what CI runs (.ci/run); prints the slowest tests
test: $(STAMP)
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

# the unit layer only (config, fusion, fs, measures, listing, registry...): under two minutes
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=10 $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/faceqc bench -n $${N:-2000}

clean:
	rm -rf demo_data .pytest_cache
