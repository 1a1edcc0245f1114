"""The model stages as pods (GPU nodes, a CPU node for `format`) (`runner: kubernetes`): `GKEStartPodOperator`, or
`KubernetesPodOperator` when `kubernetes.gke` is false.

`StagePodOperator` is what the DAG holds for every stage that loads a model (`generate`, `label`
with a reward-model judge, `train`, `evaluate_answers`): one class, the stage a parameter.
Importing the Kubernetes and Google providers costs about a second and pulls in the Google client
libraries, so the DAG file must not; the real operator is built on the worker, from the run's
personas.yaml snapshot as the deployment wrote it (a run's conf never chooses the image, the
namespace or the service account), and runs in its place: deferrable (the triggerer watches the
pod, no worker slot is held while a GPU node scales up), logs streamed every minute, the pod
deleted at the end, and `durable` (a restarted worker reattaches to the running pod).

The pod runs the same CLI call as the local runner, wrapped in `remote` so its inputs come from
and its outputs go to the artifact store:

    python -m dpo_tasks remote --pull-from <staging>/<stage>/inputs --push-to <staging>/<stage>/outputs \\
        --push train --push summaries/train.json -- train --persona P --personas-file ... --run-dir ...

The pod is hardened for a GKE platform team's admission policies: non-root with the trainer
image's fixed UID, no privilege escalation, every capability dropped, seccomp RuntimeDefault, a
read-only root filesystem (the run dir, /tmp and the caches are size-limited emptyDirs, /dev/shm a
memory-backed one), no service-account token (Workload Identity needs none), and an
`activeDeadlineSeconds` just above the task's timeout as a backstop. `python -m dpo_tasks
pod-spec` prints the pod without contacting a cluster.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

from airflow.sdk import BaseOperator

from dpo_tasks.config import KubernetesConfig, PipelineConfig, PodResources

GPU_RESOURCE = "nvidia.com/gpu"
POD_LOG_INTERVAL_S = 60
# The pod outlives the task's timeout by this much at most (the task's own timeout fires first and
# deletes the pod; the deadline covers a worker and triggerer that are both gone).
DEADLINE_MARGIN_S = 600
CACHE_MOUNT = "/cache"
HF_HOME = f"{CACHE_MOUNT}/huggingface"
LABEL_MAX = 63
POD_NAME_MAX = 50  # the provider appends "-" + an 8-character suffix
LABEL_PREFIX = "persona-dpo.io"
# The trainer image's WORKDIR: where a relative --run-dir lands in the pod.
POD_WORKDIR = "/opt/persona-dpo"
# Environment the worker passes on to the pod: where the store and the staging area are.
FORWARDED_ENV = ("PERSONA_DPO_STORE", "PERSONA_DPO_STAGING", "PERSONA_DPO_DVC_REMOTE")


def _hashed(clean: str, original: str, keep: int) -> str:
    """`clean` cut to `keep` characters, plus a hash of `original` (what the value stands for)."""
    return f"{clean[:keep].rstrip('-_.')}-{hashlib.sha256(original.encode()).hexdigest()[:8]}"


def label_value(value: str) -> str:
    """`value` as a valid Kubernetes label value: at most 63 characters of [A-Za-z0-9-_.], alphanumeric
    at both ends. A value that had to change gets a hash of the original, so two ids never share one."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip("-_.")
    if clean == value and len(value) <= LABEL_MAX:
        return value
    return _hashed(clean, value, LABEL_MAX - 9).lstrip("-_.")


def pod_name(stage: str, namespace: str) -> str:
    """A DNS-1123 label (the provider adds a random suffix): dpo-<stage>-<namespace>, hashed when long."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"dpo-{stage}-{namespace}".lower()).strip("-")
    return name if len(name) <= POD_NAME_MAX else _hashed(name, name, POD_NAME_MAX - 9)


def pod_labels(run: dict[str, Any], stage: str) -> dict[str, str]:
    """Selection and cost/ownership labels: which persona, community, DAG, run and stage a pod is."""
    labels = {
        "app.kubernetes.io/name": "persona-dpo-trainer",
        "app.kubernetes.io/component": label_value(stage),
        f"{LABEL_PREFIX}/persona": label_value(run["persona"]),
        f"{LABEL_PREFIX}/dag-id": label_value(run.get("dag_id") or ("dpo_custom" if run.get("community") else f"dpo_{run['persona']}")),
        f"{LABEL_PREFIX}/run-id": label_value(run["run_id"]),
    }
    if run.get("community"):
        labels[f"{LABEL_PREFIX}/community"] = label_value(run["community"])
    return labels


def pod_arguments(stage: str, run: dict[str, Any], staging: dict[str, str]) -> list[str]:
    """Arguments after `python -m dpo_tasks`: `remote` wrapping the local runner's exact stage call."""
    from dpo_tasks.orchestration.tasks import POD_STAGES, stage_argv

    push: list[str] = []
    for rel in POD_STAGES[stage][1]:
        push += ["--push", rel]
    return ["remote", "--pull-from", staging["inputs"], "--push-to", staging["outputs"], *push, "--", *stage_argv(stage, run)]


def _volumes(k8s_cfg: KubernetesConfig, run_dir: str):
    from kubernetes.client import models as k8s

    volumes = [
        k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=k8s_cfg.shm_size)),
        k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=k8s_cfg.scratch_size)),
        k8s.V1Volume(name="cache", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=k8s_cfg.cache_size)),
    ]
    mounts = [
        k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
        # The worker's run-dir path, so the stage call is byte for byte the local runner's.
        k8s.V1VolumeMount(name="scratch", mount_path=run_dir, sub_path="run"),
        k8s.V1VolumeMount(name="scratch", mount_path="/tmp", sub_path="tmp"),
        k8s.V1VolumeMount(name="cache", mount_path=CACHE_MOUNT),
    ]
    mc = k8s_cfg.model_cache
    if mc is not None:
        if mc.pvc:
            source = {"persistent_volume_claim": k8s.V1PersistentVolumeClaimVolumeSource(claim_name=mc.pvc, read_only=mc.read_only)}
        else:
            source = {"csi": k8s.V1CSIVolumeSource(
                driver="gcsfuse.csi.storage.gke.io", read_only=mc.read_only,
                volume_attributes={"bucketName": mc.gcs_bucket, "mountOptions": "implicit-dirs"},
            )}
        volumes.append(k8s.V1Volume(name="model-cache", **source))
        mounts.append(k8s.V1VolumeMount(name="model-cache", mount_path=HF_HOME, read_only=mc.read_only))
    return volumes, mounts


def _env(k8s_cfg: KubernetesConfig):
    from kubernetes.client import models as k8s

    env = {
        "PERSONA_DPO_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
        # The root filesystem is read-only: everything a library caches goes to the mounted volumes.
        "HOME": "/tmp", "HF_HOME": HF_HOME, "PERSONA_DPO_CACHE": f"{CACHE_MOUNT}/persona-dpo",
        "XDG_CACHE_HOME": f"{CACHE_MOUNT}/xdg", "TRITON_CACHE_DIR": f"{CACHE_MOUNT}/triton",
    }
    env |= {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    out = [k8s.V1EnvVar(name=k, value=v) for k, v in env.items()]
    if k8s_cfg.hf_token_secret is not None:
        # Only a reference travels: the token never appears in the pod spec, the args, XCom or logs.
        ref = k8s_cfg.hf_token_secret
        out.append(k8s.V1EnvVar(name="HF_TOKEN", value_from=k8s.V1EnvVarSource(
            secret_key_ref=k8s.V1SecretKeySelector(name=ref.name, key=ref.key, optional=False))))
    return out


def build_pod_operator(
    run: dict[str, Any], stage: str, staging: dict[str, str], *, task_id: str | None = None,
    execution_timeout: timedelta | None = None, cfg: PipelineConfig | None = None,
):
    """The provider operator that starts `stage`'s pod for this run (nothing is contacted yet).
    `cfg`: the deployment config, when not the run's personas.yaml snapshot (pod-spec)."""
    from kubernetes.client import models as k8s

    from dpo_tasks.orchestration.tasks import POD_RESOURCES, run_deployment_config

    cfg = cfg or run_deployment_config(run)
    k8s_cfg = cfg.kubernetes
    if k8s_cfg.image is None:
        raise ValueError(f"kubernetes.image is not set for persona {run['persona']!r}: no trainer image to run the {stage} pod")
    res: PodResources = getattr(k8s_cfg, POD_RESOURCES[stage])
    gpus = {GPU_RESOURCE: str(res.gpu_count)} if res.gpu_count else {}
    run_dir = Path(run["run_dir"])
    volumes, mounts = _volumes(k8s_cfg, str(run_dir if run_dir.is_absolute() else Path(POD_WORKDIR) / run_dir))
    kwargs: dict[str, Any] = dict(
        task_id=task_id or stage,
        name=pod_name(stage, run["namespace"]),
        namespace=k8s_cfg.namespace,
        image=k8s_cfg.image,
        image_pull_policy="IfNotPresent",
        cmds=["python", "-m", "dpo_tasks"],
        arguments=pod_arguments(stage, run, staging),
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": res.cpu, "memory": res.memory, "ephemeral-storage": res.ephemeral_storage, **gpus},
            limits={"memory": res.memory, "ephemeral-storage": res.ephemeral_storage, **gpus},
        ),
        node_selector=dict(res.node_selector),
        tolerations=[k8s.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect) for t in res.tolerations],
        labels=pod_labels(run, stage),
        annotations={"gke-gcsfuse/volumes": "true"} if k8s_cfg.model_cache and k8s_cfg.model_cache.gcs_bucket else None,
        service_account_name=k8s_cfg.service_account_name,
        automount_service_account_token=False,
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=k8s_cfg.run_as_user, run_as_group=k8s_cfg.run_as_user,
            fs_group=k8s_cfg.run_as_user, seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        container_security_context=k8s.V1SecurityContext(
            run_as_non_root=True, run_as_user=k8s_cfg.run_as_user, run_as_group=k8s_cfg.run_as_user,
            allow_privilege_escalation=False, privileged=False, read_only_root_filesystem=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"]), seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        volumes=volumes,
        volume_mounts=mounts,
        env_vars=_env(k8s_cfg),
        active_deadline_seconds=res.timeout_s + DEADLINE_MARGIN_S,
        # GPU node pools scale from zero: a pod may wait many minutes for its node.
        startup_timeout_seconds=k8s_cfg.startup_timeout_s,
        schedule_timeout_seconds=k8s_cfg.startup_timeout_s,
        get_logs=True,
        logging_interval=POD_LOG_INTERVAL_S,
        deferrable=True,
        on_finish_action="delete_pod",
        on_kill_action="delete_pod",
        durable=True,
        log_events_on_failure=True,
        execution_timeout=execution_timeout or timedelta(seconds=res.timeout_s),
    )
    if k8s_cfg.gke:
        from airflow.providers.google.cloud.operators.kubernetes_engine import GKEStartPodOperator

        missing = [f for f in ("project_id", "location", "cluster_name") if not getattr(k8s_cfg, f)]
        if missing:
            raise ValueError(
                f"kubernetes.gke is true but kubernetes.{', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set for persona {run['persona']!r}"
            )
        return GKEStartPodOperator(
            project_id=k8s_cfg.project_id, location=k8s_cfg.location, cluster_name=k8s_cfg.cluster_name, **kwargs,
        )
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    return KubernetesPodOperator(kubernetes_conn_id=k8s_cfg.kubernetes_conn_id, **kwargs)


class StagePodOperator(BaseOperator):
    """One model stage of a run in a pod: stage the inputs, run the provider operator built at run
    time, fetch the outputs into the run directory. Returns the stage's summary.

    `label` is a model stage only with a reward-model judge, which a run may choose; with a rules
    or API judge it runs on the worker like any light stage."""

    template_fields: Sequence[str] = ("run",)
    ui_color = "#c8e6c9"

    def __init__(self, *, stage: str, run: Any, **kwargs: Any):
        from dpo_tasks.orchestration.tasks import POD_STAGES

        if stage not in POD_STAGES:
            raise ValueError(f"stage {stage!r} does not run in a pod; pod stages: {', '.join(POD_STAGES)}")
        super().__init__(**kwargs)
        self.stage = stage
        self.run = run

    def _delegate(self, staging: dict[str, str]):
        from airflow.sdk.exceptions import AirflowFailException

        try:
            op = build_pod_operator(self.run, self.stage, staging, task_id=self.task_id, execution_timeout=self.execution_timeout)
        except ValueError as exc:
            # A deployment setting is missing (image, GKE cluster): every retry would fail the same way.
            raise AirflowFailException(f"{self.stage} pod: {exc}") from exc
        self._pod_op = op
        return op

    def execute(self, context: Any) -> Any:
        from dpo_tasks.orchestration import tasks

        # A disabled optional stage (sft) is skipped here, before any pod is created.
        tasks.skip_if_disabled(self.stage, self.run)
        if not tasks.runs_on_pod(self.stage, self.run):
            return tasks.run_stage(self.stage, self.run)
        # Deferrable: this raises TaskDeferred while the pod runs, and the work ends in trigger_reentry.
        self._delegate(tasks.stage_pod_inputs(self.stage, self.run)).execute(context)
        return tasks.fetch_pod_outputs(self.stage, self.run)

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        # The provider operator deferred with method_name="trigger_reentry"; the task runner calls it
        # on this task when the triggerer reports back. It defers again while the pod still runs.
        from dpo_tasks.orchestration import tasks

        self._delegate(tasks.staging_for(self.run, self.stage)).trigger_reentry(context, event)
        return tasks.fetch_pod_outputs(self.stage, self.run)

    def on_kill(self) -> None:
        op = getattr(self, "_pod_op", None)
        if op is not None:
            op.on_kill()
