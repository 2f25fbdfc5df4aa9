# `make demo` and `make test` each create or update .venv with every pinned dependency first.
# The first Python >= 3.11 on the PATH (or PYTHON=... on the command line).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt requirements-dev.txt
	@test -x $(PY) || { $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
		|| { echo "make: wsseg needs Python >= 3.11: none found (tried python3.13, 3.12, 3.11, python3); \
	give one with make PYTHON=/path/to/python" >&2; exit 1; }; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/wsseg demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(TEST_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
