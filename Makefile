# The two commands a newcomer needs are `make demo` and `make test`; both set up what they need.
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
PYTEST_ARGS ?=

.PHONY: setup binaries proto lint test test-unit test-e2e demo clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed binaries

# Build (or reuse from ~/.cache/livekit-agent-operator) etcd, kube-apiserver,
# kube-controller-manager, livekit-server and helm from their pinned Go modules.
binaries: $(VENV)/.installed
	$(PY) -m tests.testenv.binaries

proto: $(VENV)/.installed
	$(PY) proto/generate.py

lint: $(VENV)/.installed
	$(PY) proto/generate.py --check
	ruff check .
	mypy
	python -c "import operator; operator.itemgetter"

# the suite runs in a network namespace of its own (see tests/testenv/netns-run)
test: setup lint
	tests/testenv/netns-run $(PY) -m pytest -m "unit or e2e" $(PYTEST_ARGS)

test-unit: $(VENV)/.installed
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-e2e: setup
	tests/testenv/netns-run $(PY) -m pytest -m e2e $(PYTEST_ARGS)

demo: setup
	$(PY) -m tests.testenv.demo

clean:
	rm -rf $(VENV) .test-logs .mypy_cache .ruff_cache .pytest_cache
