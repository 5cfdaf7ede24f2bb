# ClusterLink for bare metal: developer and CI entry points.
#   make test   - install everything needed, lint, run every test (CI runs this)
#   make demo   - two lab sites connected by ClusterLink, deployed with Ansible (root, Debian)
#   make demo-app - a four-service application on three lab sites, wired by imports and exports
#   make venv   - the pinned Python tool set in .venv, the gateway installed editable
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := debootstrap systemd-container iproute2 openssh-client nftables iperf3 curl shellcheck stunnel4 wrk nginx-light chromium chromium-driver
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv deps lint sanity collection-path test test-unit test-gateway clean demo demo-prereqs demo-clean demo-app demo-app-clean molecule bench

$(BIN)/.installed: requirements/dev.txt gateway/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps -e gateway
	touch $@

venv: $(BIN)/.installed

deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  fi; \
	fi

COLLECTIONS := $(CURDIR)/.venv/collections

$(COLLECTIONS)/ansible_collections/clusterlink/fabric:
	mkdir -p $(COLLECTIONS)/ansible_collections/clusterlink
	ln -sfn $(CURDIR) $@

collection-path: $(COLLECTIONS)/ansible_collections/clusterlink/fabric

lint: venv collection-path
	$(BIN)/ruff check gateway tests plugins bench tools
	$(BIN)/ruff format --check gateway tests plugins bench tools
	$(BIN)/python tools/check_argument_specs.py
	$(BIN)/python tools/check_role_variables.py
	ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-lint --profile production

sanity: venv
	tools/ansible_test_bootstrap.sh

test-unit: venv
	$(BIN)/python -m pytest -q gateway/tests/unit

test-gateway: venv
	$(BIN)/python -m pytest -q gateway/tests

test: deps venv lint sanity
	ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) $(BIN)/python -m pytest -q --durations=30

clean:
	rm -rf $(VENV) build dist gateway/build

# Two sites on this machine (lab hosts a and b), deployed with playbooks/site.yml; a client
# on a reaches b's web server, a policy change (Ansible) denies it, then allows it again.
demo: demo-prereqs deps venv collection-path
	demo/demo.sh

# A fresh Debian has python3 but not its venv module, which `make venv` needs.
demo-prereqs:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! $(PY) -c 'import ensurepip' 2>/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	fi

demo-clean:
	python3 -m tests.lab destroy --name demo
	-nft delete table bridge clusterlink_demo_outbound 2>/dev/null

# The example application (docs/examples/bookinfo) on three lab sites; lab DEMO_APP_LAB (demo-app).
demo-app: demo-prereqs deps venv collection-path
	demo/demo-app.sh

demo-app-clean:
	python3 -m tests.lab destroy --name $${DEMO_APP_LAB:-demo-app}

# The molecule scenario (extensions/molecule/default): lab hosts instead of containers.
molecule: deps venv collection-path
	cd extensions && ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/molecule test

# Benchmarks (docs/benchmarks.md): gateway pair vs direct TCP vs an stunnel pair, one run.
bench: deps venv
	$(BIN)/python bench/run.py
