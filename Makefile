# Set-up and entry points. Each target creates .venv and installs the
# project into it when needed, so `make demo` and `make test` work on a
# fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.psenet-installed

.PHONY: install demo test test-all test-cuda clean

install: $(INSTALLED)

$(INSTALLED): setup.py psenet_plugin/requirements.py requirements/tested.txt \
		requirements/tested-det-seg.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c requirements/tested.txt \
		-c requirements/tested-det-seg.txt -e '.[demo,export,tests,det,seg]'
	touch $(INSTALLED)

# The main job on the embedded MNIST digits, with a summary at the end.
demo: install
	$(PY) tools/demo.py

# The default test suite (slow tests excluded; see README), on 2 workers
# (pytest-xdist), a test file's tests on one worker (they share fixtures).
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# Everything, slow tests included.
test-all: install
	$(PY) -m pytest -q -m "slow or not slow" tests

# The CUDA tests only (they skip without a GPU; README.md, Tests).
test-cuda: install
	$(PY) -m pytest -q -m cuda tests

clean:
	rm -rf work_dirs .pytest_cache
