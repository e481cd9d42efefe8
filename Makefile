# Two commands do all set-up:  `make demo`  and  `make test`.
# Both create the virtual environment in .venv on first use (Python 3.11+ and the package
# registries are all they need).  Every install goes through constraints.txt: one tested version
# of every package, for every extra.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LOCK := constraints.txt
BASE := $(VENV)/.faceqc-base
TEST := $(VENV)/.faceqc-test
# every extra, and the mixes the README documents
EXTRAS := "" s3 gcs azure cluster prod pyiqa samples video test s3,cluster test,prod gcs,azure

.PHONY: demo test test-fast bench env check-installs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# faceqc and what it needs: enough for `faceqc demo`, `faceqc score` on local folders and S3
$(BASE): pyproject.toml $(LOCK) Makefile | $(PY)
	$(PIP) install -q -c $(LOCK) --upgrade pip
	$(PIP) install -q -c $(LOCK) -e .
	touch $@

# the test extra (torch, moto, a Ray head...), and three packages installed --no-deps for their
# files: insightface's sample photos (the tests' real faces), pyiqa and facexlib (the pyiqa
# backend's tests; the metrics faceqc runs need neither transformers nor bitsandbytes)
$(TEST): $(BASE)
	$(PIP) install -q -c $(LOCK) -e ".[test]"
	$(PIP) install -q -c $(LOCK) --no-deps insightface==2.1 pyiqa==0.1.16 facexlib==0.3.0
	touch $@

env: $(TEST)

demo: $(BASE)
	$(VENV)/bin/faceqc demo

# everything: what CI runs (.ci/run); prints the slowest tests
test: $(TEST)
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

# the unit layer only (config, fusion, fs, measures, listing, registry...): under two minutes
test-fast: $(TEST)
	$(PY) -m pytest -q -m "not slow" --durations=10 $(PYTEST_ARGS)

bench: $(BASE)
	$(VENV)/bin/faceqc bench -n $${N:-2000}

# every extra resolves against the lock (what the README's install lines rely on); no install
check-installs: $(BASE)
	@for extra in $(EXTRAS); do \
	  spec=$$( [ -n "$$extra" ] && echo ".[$$extra]" || echo "." ); \
	  start=$$(date +%s); \
	  if ! out=$$($(PIP) install -q --dry-run -c $(LOCK) -e "$$spec" 2>&1); then \
	    echo "$$out" >&2; echo "check-installs: $$spec does not resolve with $(LOCK)" >&2; exit 1; fi; \
	  echo "check-installs: $$spec resolves ($$(( $$(date +%s) - start )) s)"; \
	done

clean:
	rm -rf demo_data .pytest_cache
