# The two commands a newcomer needs are `make demo` and `make test`; both set up what they need.
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
PYTEST_ARGS ?=

.PHONY: bench dashboard-image setup system-packages binaries images manifests proto lint test test-unit test-lowest test-e2e demo clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Debian packages (devenv/apt-packages.txt): installed when missing, so a fresh machine needs
# nothing by hand
system-packages:
	devenv/install-system-packages

setup: system-packages $(VENV)/.installed binaries images

# Build (or reuse from ~/.cache/livekit-agent-operator) etcd, kube-apiserver,
# kube-controller-manager, the real node's kube-scheduler, kubelet, kube-proxy and CoreDNS,
# livekit-server and helm from their pinned Go modules, and fetch
# the Prometheus Operator CRDs the chart test installs (devenv/crds.py).
binaries: $(VENV)/.installed
	$(PY) -m devenv.binaries

# Build (or reuse) the images from our Dockerfiles with buildah: the Python base made from
# Debian packages, the runner, the operator and the test agent image, each an OCI archive under
# ~/.cache/livekit-agent-operator/images (devenv/images.py). Needs the network: outside netns-run.
images: system-packages $(VENV)/.installed
	$(PY) -m devenv.images

# manifests/ for `kubectl apply` users: the chart's default render and a copy of its CRD
# (tests/e2e/test_chart.py fails when they differ)
manifests: $(VENV)/.installed
	$(PY) -m devenv.binaries --only helm
	$(PY) -m tests.support.chart

proto: $(VENV)/.installed
	$(PY) proto/generate.py

lint: $(VENV)/.installed
	$(PY) proto/generate.py --check
	ruff check .
	mypy
	lint-imports
	python -c "import operator; operator.itemgetter"

# the suite runs in a network namespace of its own (see devenv/netns-run)
test: setup lint test-lowest
	devenv/netns-run $(PY) -m pytest -m "unit or e2e" $(PYTEST_ARGS)

test-unit: $(VENV)/.installed
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

# The unit tests again with the LOWEST versions pyproject.toml allows (every floor pinned with
# `==` by devenv/lowest_constraints.py), in a venv of its own: a floor lower than what the code
# needs fails here, not on a user's install. The venv is kept until pyproject.toml (or the
# generator) changes: its stamp is named by their hash.
LOWEST_VENV ?= .venv-lowest
LOWEST_HASH := $(shell cat pyproject.toml devenv/lowest_constraints.py | sha256sum | cut -c1-16)
LOWEST_STAMP := $(LOWEST_VENV)/.installed-$(LOWEST_HASH)

$(LOWEST_STAMP): | $(VENV)/.installed
	rm -rf $(LOWEST_VENV)
	python3 -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(PY) -m devenv.lowest_constraints --output $(LOWEST_VENV)/constraints.txt
	$(LOWEST_VENV)/bin/python -m pip install -q -c $(LOWEST_VENV)/constraints.txt -e '.[dev]'
	touch $@

test-lowest: $(LOWEST_STAMP)
	$(LOWEST_VENV)/bin/python -m pytest -m unit -q -p no:cacheprovider

test-e2e: setup
	devenv/netns-run $(PY) -m pytest -m e2e $(PYTEST_ARGS)

demo: setup
	devenv/netns-run $(PY) -m devenv.demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) $(LOWEST_VENV) .test-logs .mypy_cache .ruff_cache .pytest_cache

# The benchmarks (tests/bench/*.py; each prints its figures with the load average and writes
# JSON under .test-logs/). livekit-agents, the reference, comes from the dev extra: the same
# release as in the runner's livekit-agents runtime. A failed case does not stop the others.
bench: setup
	-devenv/netns-run $(PY) -m tests.bench.dispatch_latency --json bench-dispatch-real
	-devenv/netns-run $(PY) -m tests.bench.join_path
	-devenv/netns-run $(PY) -m tests.bench.runner_memory
	-devenv/netns-run $(PY) -m tests.bench.dead_runner
	-devenv/netns-run $(PY) -m tests.bench.lka_voice_latency
	-devenv/netns-run $(PY) -m tests.bench.voice_latency
	-devenv/netns-run $(PY) -m tests.bench.lka_memory
	-devenv/netns-run $(PY) -m tests.bench.start_latency
	$(PY) -m tests.bench.supervisor_capacity --runners 500 1000 2000 4000

# docs/dashboard.png: the chart's dashboard panels drawn with matplotlib from the Prometheus
# that scraped the operator during the monitoring e2e test (Grafana itself cannot run here)
dashboard-image: setup
	$(PY) -m pip install -q matplotlib
	AGENT_OPERATOR_DASHBOARD_PNG=$(abspath docs/dashboard.png) devenv/netns-run $(PY) -m pytest -m e2e tests/e2e/test_prometheus.py
