"""The persona DAG in Kubernetes mode under `dag.test()`, with the Kubernetes API as the only thing
replaced (tests/fake_kubernetes.py: creating a pod runs its rendered container locally) and the
store and staging on gcp-storage-emulator, so every pod's inputs and outputs go through gs://.
The worker side cannot import torch, transformers, trl or peft."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.dags.airflow_helpers import run_dag_test
from tests.dags.test_dag_run import PERSONA, feedback_db  # noqa: F401 (fixture)
from tests.dpo_tasks.store.conftest import gcs_emulator, gcs_uri  # noqa: F401 (fixtures)
from tests.fake_kubernetes import FakeKubernetes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKER_SITE = REPO / "tests" / "dpo_tasks" / "orchestration" / "worker_site"
TOKEN = "hf_fake_token_for_the_pods"


def tiny_production_profile(tmp_path: Path, model_dir: Path) -> Path:
    """deploy/personas.production.yaml with only the model swapped for the tiny test model, offline
    judges and a plain Kubernetes cluster (the fake API) instead of GKE."""
    raw = yaml.safe_load((REPO / "deploy" / "personas.production.yaml").read_text())
    d = raw["defaults"]
    d["model"] = {"base": str(model_dir)}
    d["generation"] |= {"num_prompts": 2, "max_new_tokens": 8, "batch_size": 8}
    d["labeling"] = {"judge": "rules", "min_margin": 0}
    d["evaluation"] = {"judge": "checklist", "max_new_tokens": 8}
    d["training"] |= {"batch_size": 2, "grad_accum": 1, "max_length": 128, "max_prompt_length": 96, "lora_r": 4, "lora_alpha": 8}
    d["kubernetes"] |= {"gke": False}
    path = tmp_path / "personas.production.tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_persona_dag_on_kubernetes_publishes_through_gcs(airflow_home, tiny_model_dir, feedback_db, gcs_uri, tmp_path):  # noqa: F811
    url, max_id = feedback_db
    personas = tiny_production_profile(tmp_path, tiny_model_dir)
    conf = {"num_prompts": 2, "epochs": 1, "min_win_rate_lower_bound": 0.0,
            "feedback": {"persona_id": PERSONA, "from_id": 0, "to_id": max_id}}
    with FakeKubernetes({"hf-token": {"token": TOKEN}}) as k8s:
        conn = json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(k8s.kubeconfig)}})
        result, output = run_dag_test(
            airflow_home, f"dpo_{PERSONA}", conf, timeout=900,
            PERSONA_DPO_PERSONAS=str(personas), FEEDBACK_DB_URL=url, PERSONA_DPO_STORE=f"{gcs_uri}/store",
            PERSONA_DPO_STAGING=f"{gcs_uri}/staging", AIRFLOW_CONN_KUBERNETES_DEFAULT=conn,
            PYTHONPATH=f"{WORKER_SITE}:{REPO}",
        )
        created = [p["metadata"]["labels"]["app.kubernetes.io/component"] for p in k8s.created]
        deleted = list(k8s.deleted)

    assert result["state"] == "success", output[-8000:]
    tasks = dict(result["tasks"])
    # sft is off by default: skipped before any pod, and train runs all the same.
    assert tasks.pop("sft") == "skipped", tasks
    assert all(state == "success" for state in tasks.values()), tasks
    assert created == ["generate", "format", "train", "evaluate_answers"]
    assert len(deleted) == len(created)  # every pod deleted when it finished
    assert TOKEN not in output
    from dpo_tasks.store import open_store

    assert open_store(f"{gcs_uri}/store").latest(PERSONA) is not None


FAILING_POD_DAG = '''
import json, os
from datetime import datetime
from airflow.sdk import DAG
from dpo_tasks.orchestration.pod import StagePodOperator

with DAG("pod_fails", schedule=None, start_date=datetime(2025, 1, 1)):
    StagePodOperator(task_id="train", stage="train", run=json.loads(os.environ["TEST_RUN"]), retries=0)
'''


def test_a_failing_pod_fails_the_task_with_the_pods_log_tail(airflow_home, tiny_model_dir, gcs_uri, tmp_path):
    """The pod's command fails for a real reason (4-bit training asked of a CPU-only "node"): the
    task fails, and the pod's own last lines are in the task log."""
    from dpo_tasks.orchestration.tasks import common_args

    personas = tiny_production_profile(tmp_path, tiny_model_dir)
    raw = yaml.safe_load(personas.read_text())
    raw["defaults"]["training"]["quantization"] = "4bit"
    run_dir = airflow_home / "runs" / PERSONA / "failing_pod"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "personas.yaml").write_text(yaml.safe_dump(raw))
    (run_dir / "dpo.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n")
    run = {"dag_id": "pod_fails", "namespace": PERSONA, "persona": PERSONA, "run_dir": str(run_dir), "run_id": "failing_pod",
           "args": common_args(PERSONA, run_dir / "personas.yaml", run_dir, []), "runner": "kubernetes", "dry_run": False}
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "pod_fails.py").write_text(FAILING_POD_DAG)
    with FakeKubernetes({"hf-token": {"token": TOKEN}}) as k8s:
        conn = json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(k8s.kubeconfig)}})
        result, output = run_dag_test(
            airflow_home, "pod_fails", {}, timeout=300, AIRFLOW__CORE__DAGS_FOLDER=str(dags), TEST_RUN=json.dumps(run),
            PERSONA_DPO_STAGING=f"{gcs_uri}/staging", AIRFLOW_CONN_KUBERNETES_DEFAULT=conn, PYTHONPATH=f"{WORKER_SITE}:{REPO}",
        )
    assert result["tasks"] == {"train": "failed"}, output[-6000:]
    assert "needs a CUDA GPU (bitsandbytes NF4)" in output
