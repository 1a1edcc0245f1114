"""The train stage as a pod on an A100 node: `GKEStartPodOperator`, or `KubernetesPodOperator`
when `training.kubernetes.gke` is false.

`TrainPodOperator` is what the DAG holds (task `train_kubernetes`). Importing the Kubernetes and Google providers costs
about a second and pulls in the Google client libraries, so the DAG file must not; the real
operator is built on the worker, from the run's own config (personas.yaml snapshot + the run's
overrides), and runs in its place: deferrable (the triggerer watches the pod, no worker slot is
held while a GPU node scales up), logs streamed every minute, the pod deleted at the end.

The pod runs the same CLI call as the local runner, wrapped in `remote` so its inputs come from
and its outputs go to the artifact store:

    python -m dpo_tasks remote --pull-from <staging>/inputs --push-to <staging>/outputs \\
        --push train --push summaries/train.json -- train --persona P --personas-file ... --run-dir ...
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Sequence

from airflow.sdk import BaseOperator

from dpo_tasks.config import KubernetesConfig

GPU_RESOURCE = "nvidia.com/gpu"
POD_LOG_INTERVAL_S = 60


def train_pod_arguments(run: dict[str, Any], staging: dict[str, str]) -> list[str]:
    """Arguments after `python -m dpo_tasks`: `remote` wrapping the local runner's exact train call."""
    from dpo_tasks.orchestration.tasks import TRAIN_OUTPUTS, stage_argv

    push: list[str] = []
    for rel in TRAIN_OUTPUTS:
        push += ["--push", rel]
    return ["remote", "--pull-from", staging["inputs"], "--push-to", staging["outputs"], *push, "--", *stage_argv("train", run)]


def build_pod_operator(
    run: dict[str, Any], staging: dict[str, str], *, task_id: str = "train_pod", execution_timeout: timedelta | None = None
):
    """The provider operator that starts the training pod for this run (nothing is contacted yet)."""
    from kubernetes.client import models as k8s

    from dpo_tasks.orchestration.tasks import run_persona

    k8s_cfg: KubernetesConfig = run_persona(run).config.training.kubernetes
    gpus = str(k8s_cfg.gpu_count)
    disk = {"ephemeral-storage": k8s_cfg.ephemeral_storage} if k8s_cfg.ephemeral_storage else {}
    kwargs: dict[str, Any] = dict(
        task_id=task_id,
        # A DNS-1123 name; the provider adds a random suffix.
        name=re.sub(r"[^a-z0-9-]+", "-", f"dpo-train-{run['namespace']}".lower())[:50].strip("-"),
        namespace=k8s_cfg.namespace,
        image=k8s_cfg.image,
        cmds=["python", "-m", "dpo_tasks"],
        arguments=train_pod_arguments(run, staging),
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": k8s_cfg.cpu, "memory": k8s_cfg.memory, GPU_RESOURCE: gpus, **disk},
            limits={"memory": k8s_cfg.memory, GPU_RESOURCE: gpus, **disk},
        ),
        node_selector=dict(k8s_cfg.node_selector),
        tolerations=[k8s.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")],
        labels={"app": "persona-dpo-trainer", "persona-dpo/namespace": run["namespace"].replace("/", ".")},
        service_account_name=k8s_cfg.service_account_name,
        # GPU node pools scale from zero: a pod may wait many minutes for its node.
        startup_timeout_seconds=k8s_cfg.startup_timeout_s,
        schedule_timeout_seconds=k8s_cfg.startup_timeout_s,
        get_logs=True,
        logging_interval=POD_LOG_INTERVAL_S,
        deferrable=True,
        on_finish_action="delete_pod",
        on_kill_action="delete_pod",
        reattach_on_restart=True,
        log_events_on_failure=True,
        execution_timeout=execution_timeout,
        env_vars={"PERSONA_DPO_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"},
    )
    if k8s_cfg.gke:
        from airflow.providers.google.cloud.operators.kubernetes_engine import GKEStartPodOperator

        missing = [f for f in ("project_id", "location", "cluster_name") if not getattr(k8s_cfg, f)]
        if missing:
            raise ValueError(
                f"training.kubernetes.gke is true but training.kubernetes.{', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set for persona {run['persona']!r}"
            )
        return GKEStartPodOperator(
            project_id=k8s_cfg.project_id, location=k8s_cfg.location, cluster_name=k8s_cfg.cluster_name, **kwargs,
        )
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    return KubernetesPodOperator(kubernetes_conn_id=k8s_cfg.kubernetes_conn_id, **kwargs)


class TrainPodOperator(BaseOperator):
    """Train in a pod on an A100 node: stage the inputs, run the provider operator built at run
    time, fetch the outputs into the run directory. Returns the train stage's summary."""

    template_fields: Sequence[str] = ("run",)
    ui_color = "#c8e6c9"

    def __init__(self, *, run: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.run = run

    def _delegate(self, staging: dict[str, str]):
        op = build_pod_operator(self.run, staging, task_id=self.task_id, execution_timeout=self.execution_timeout)
        self._pod_op = op
        return op

    def execute(self, context: Any) -> Any:
        from dpo_tasks.orchestration.tasks import fetch_train_outputs, stage_train_inputs

        # Deferrable: this raises TaskDeferred while the pod runs, and the work ends in trigger_reentry.
        self._delegate(stage_train_inputs(self.run)).execute(context)
        return fetch_train_outputs(self.run)

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        # The provider operator deferred with method_name="trigger_reentry"; the task runner calls it
        # on this task when the triggerer reports back. It defers again while the pod still runs.
        from dpo_tasks.orchestration.tasks import fetch_train_outputs, staging_for

        self._delegate(staging_for(self.run)).trigger_reentry(context, event)
        return fetch_train_outputs(self.run)

    def on_kill(self) -> None:
        op = getattr(self, "_pod_op", None)
        if op is not None:
            op.on_kill()
