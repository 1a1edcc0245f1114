"""The training pod the operator would start (built, never sent: no cluster needed), and the
`remote` wrapper the pod runs."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from dpo_tasks.config import default_personas_path
from dpo_tasks.orchestration.pod import GPU_RESOURCE, TrainPodOperator, build_pod_operator
from dpo_tasks.orchestration.tasks import TRAIN_OUTPUTS, common_args, stage_argv

PERSONA = "persona_c_italian_gf"
GKE = [
    "training.kubernetes.project_id=my-project", "training.kubernetes.location=us-central1",
    "training.kubernetes.cluster_name=dpo-cluster",
]


def make_run(tmp_path: Path, sets: list[str]) -> dict:
    run_dir = tmp_path / "runs" / PERSONA / "manual_2026-01-01"
    run_dir.mkdir(parents=True)
    shutil.copyfile(default_personas_path(), run_dir / "personas.yaml")
    return {
        "namespace": PERSONA, "persona": PERSONA, "run_dir": str(run_dir), "run_id": "manual_2026-01-01",
        "args": common_args(PERSONA, run_dir / "personas.yaml", run_dir, ["training.epochs=1", *sets]),
        "runner": "kubernetes", "dry_run": False,
    }


STAGING = {"inputs": "gs://bucket/_staging/p/r/inputs", "outputs": "gs://bucket/_staging/p/r/outputs"}


@pytest.mark.parametrize(
    "sets, operator",
    [
        pytest.param(GKE, "GKEStartPodOperator", id="gke"),
        pytest.param(["training.kubernetes.gke=false"], "KubernetesPodOperator", id="plain-kubernetes"),
    ],
)
def test_pod_request(tmp_path, sets, operator):
    run = make_run(tmp_path, sets)
    op = build_pod_operator(run, STAGING)
    assert type(op).__name__ == operator
    pod = op.build_pod_request_obj(dry_run=True)
    (container,) = pod.spec.containers

    assert container.image == "ghcr.io/persona-dpo/trainer:latest"
    assert container.resources.limits[GPU_RESOURCE] == "1"
    assert container.resources.requests[GPU_RESOURCE] == "1"
    assert pod.spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    assert [(t.key, t.operator, t.effect) for t in pod.spec.tolerations] == [(GPU_RESOURCE, "Exists", "NoSchedule")]
    assert pod.spec.restart_policy == "Never"
    assert pod.metadata.namespace == "persona-dpo"
    assert re.fullmatch(r"dpo-train-persona-c-italian-gf-[a-z0-9]+", pod.metadata.name), pod.metadata.name

    # The pod runs the local runner's exact train call, wrapped to move files through the store.
    assert container.command == ["python", "-m", "dpo_tasks"]
    args = container.args
    sep = args.index("--")
    assert args[sep + 1:] == stage_argv("train", run) == ["train", *run["args"]]
    assert args[:sep] == [
        "remote", "--pull-from", STAGING["inputs"], "--push-to", STAGING["outputs"],
        *[x for rel in TRAIN_OUTPUTS for x in ("--push", rel)],
    ]

    assert op.startup_timeout_seconds >= 600
    assert op.schedule_timeout_seconds >= 600
    assert op.deferrable is True
    assert op.get_logs is True and op.logging_interval
    assert str(op.on_finish_action).lower().endswith("delete_pod")


def test_pod_settings_follow_the_runs_config(tmp_path):
    run = make_run(tmp_path, [
        *GKE, "training.kubernetes.image=eu.gcr.io/p/trainer:1.2", "training.kubernetes.gpu_count=2",
        'training.kubernetes.node_selector={"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"}',
        "training.kubernetes.startup_timeout_s=1800",
    ])
    op = build_pod_operator(run, STAGING)
    pod = op.build_pod_request_obj(dry_run=True)
    assert pod.spec.containers[0].image == "eu.gcr.io/p/trainer:1.2"
    assert pod.spec.containers[0].resources.limits[GPU_RESOURCE] == "2"
    assert pod.spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"}
    assert op.startup_timeout_seconds == 1800
    assert (op.project_id, op.location, op.cluster_name) == ("my-project", "us-central1", "dpo-cluster")


def test_a_community_pod_gets_a_valid_name_and_label(tmp_path):
    run = make_run(tmp_path, ["training.kubernetes.gke=false"]) | {"namespace": "policies/Vegan_Bakers"}
    pod = build_pod_operator(run, STAGING).build_pod_request_obj(dry_run=True)
    assert re.fullmatch(r"dpo-train-policies-vegan-bakers-[a-z0-9]+", pod.metadata.name), pod.metadata.name
    assert pod.metadata.labels["persona-dpo/namespace"] == "policies.Vegan_Bakers"


def test_gke_without_a_cluster_says_which_setting_is_missing(tmp_path):
    run = make_run(tmp_path, ["training.kubernetes.project_id=my-project"])
    with pytest.raises(ValueError, match=r"training\.kubernetes\.location, cluster_name are not set for persona 'persona_c_italian_gf'"):
        build_pod_operator(run, STAGING)


def test_startup_timeout_below_gpu_scale_up_is_refused(tmp_path):
    from dpo_tasks.config import ConfigError

    run = make_run(tmp_path, [*GKE, "training.kubernetes.startup_timeout_s=120"])
    with pytest.raises(ConfigError, match="startup_timeout_s"):
        build_pod_operator(run, STAGING)


def test_train_pod_operator_stages_inputs_and_resumes_through_the_provider_operator(tmp_path, monkeypatch):
    """The DAG's task stages the run's inputs, starts the provider operator (which defers), and when
    the triggerer reports back, the task runner calls `trigger_reentry` on the DAG's task: it must
    reach the provider operator's handler and then bring the pod's outputs into the run dir."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk.exceptions import TaskDeferred

    monkeypatch.setenv("PERSONA_DPO_STAGING", str(tmp_path / "staging"))
    run = make_run(tmp_path, ["training.kubernetes.gke=false"])
    (Path(run["run_dir"]) / "dpo.jsonl").write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n')
    op = TrainPodOperator(task_id="train_kubernetes", run=run)
    assert set(op.template_fields) == {"run"}
    seen = {}

    def fake_execute(self, context):
        seen["args"] = self.arguments
        raise TaskDeferred(trigger=None, method_name="trigger_reentry")

    def fake_reentry(self, context, event):
        # What the pod's `remote` call leaves in the staging outputs.
        out = tmp_path / "staging" / PERSONA / run["run_id"] / "outputs"
        (out / "train" / "adapter").mkdir(parents=True)
        (out / "train" / "adapter" / "adapter_config.json").write_text("{}")
        (out / "summaries").mkdir()
        (out / "summaries" / "train.json").write_text('{"steps": 3}')
        seen["event"] = event

    monkeypatch.setattr(KubernetesPodOperator, "execute", fake_execute)
    monkeypatch.setattr(KubernetesPodOperator, "trigger_reentry", fake_reentry)
    with pytest.raises(TaskDeferred):
        op.execute(context={})
    staged = tmp_path / "staging" / PERSONA / run["run_id"] / "inputs"
    assert sorted(p.name for p in staged.iterdir()) == ["dpo.jsonl", "personas.yaml"]
    assert seen["args"][-len(run["args"]) - 1:] == ["train", *run["args"]]

    summary = op.resume_execution("trigger_reentry", {"event": {"status": "success"}}, context={})
    assert seen["event"] == {"status": "success"}
    assert summary == {"steps": 3}
    assert (Path(run["run_dir"]) / "train" / "adapter" / "adapter_config.json").exists()


def test_remote_pulls_runs_the_stage_and_pushes(tmp_path):
    """`remote` around a light stage (gate): inputs come from the staging dir, outputs go back."""
    import json
    import subprocess

    staging_in, staging_out = tmp_path / "in", tmp_path / "out"
    (staging_in / "eval").mkdir(parents=True)
    (staging_in / "eval" / "summary_stats.json").write_text(json.dumps(
        {"n": 40, "wins": 30, "losses": 6, "ties": 4, "win_rate": 0.8, "ci_low": 0.65, "ci_high": 0.9}))
    shutil.copyfile(default_personas_path(), staging_in / "personas.yaml")
    run_dir = tmp_path / "pod-run"
    argv = ["gate", *common_args(PERSONA, run_dir / "personas.yaml", run_dir, ["gate.min_win_rate_lower_bound=0.6"])]
    proc = subprocess.run(
        [sys.executable, "-m", "dpo_tasks", "remote", "--pull-from", str(staging_in), "--push-to", str(staging_out),
         "--push", "gate.json", "--push", "summaries/gate.json", "--", *argv],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    gate = json.loads((staging_out / "gate.json").read_text())
    assert gate["decision"] == "promote" and gate["threshold"] == 0.6
    assert (staging_out / "summaries" / "gate.json").exists()


def test_remote_pushes_nothing_when_the_stage_fails(tmp_path):
    import subprocess

    staging_in, staging_out = tmp_path / "in", tmp_path / "out"
    staging_in.mkdir()
    shutil.copyfile(default_personas_path(), staging_in / "personas.yaml")
    run_dir = tmp_path / "pod-run"
    argv = ["gate", *common_args(PERSONA, run_dir / "personas.yaml", run_dir, [])]  # no eval summary: gate fails
    proc = subprocess.run(
        [sys.executable, "-m", "dpo_tasks", "remote", "--pull-from", str(staging_in), "--push-to", str(staging_out),
         "--push", "gate.json", "--", *argv],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "no evaluation summary" in proc.stderr
    assert not staging_out.exists()
