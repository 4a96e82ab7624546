# The two set-up commands of the README: `make demo` and `make test`. Each creates the
# virtual environment it needs (in .venv) from the pinned versions in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PACKAGES := agent collectors detectors inferwatch
comma := ,

.PHONY: demo test lint typecheck unit services-up services-down services-status bench clean help

help:
	@echo "make demo   - run the end-to-end demo on the embedded default (no Kafka or Elasticsearch)"
	@echo "make test   - lint, type-check and run the whole test suite"
	@echo "make bench  - run the benchmarks and print their figures"

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
	$(BIN)/pytest

bench: $(BIN)/python
	$(call install,dev)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
