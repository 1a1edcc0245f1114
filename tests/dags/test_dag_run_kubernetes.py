"""The persona DAG in Kubernetes mode under `dag.test()`, the production profile as deployed with
only the far side of each network replaced: the Kubernetes API (tests/fake_kubernetes.py: creating
a pod runs its rendered container locally), GCS (gcp-storage-emulator: store and staging, so every
pod's inputs and outputs go through gs://), Groq and Vertex AI (tests/dpo_tasks/judges/fake_servers.py,
driven by the real `groq` and `google-genai` clients). The worker side cannot import torch,
transformers, trl or peft."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.dags.airflow_helpers import run_dag_test
from tests.dags.test_dag_run import PERSONA, feedback_db  # noqa: F401 (fixture)
from tests.dpo_tasks.store.conftest import gcs_emulator, gcs_uri  # noqa: F401 (fixtures)
from tests.dpo_tasks.judges.fake_servers import FakeLLMServer, service_account_key
from tests.fake_kubernetes import FakeKubernetes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKER_SITE = REPO / "tests" / "dpo_tasks" / "orchestration" / "worker_site"
TOKEN = "hf_fake_token_for_the_pods"
GROQ_KEY = "gsk_e2e_SECRET_never_in_a_log_9317"


def tiny_production_profile(tmp_path: Path, model_dir: Path) -> Path:
    """deploy/personas.production.yaml with only the model swapped for the tiny test model, the counts
    and lengths cut for speed and a plain Kubernetes cluster (the fake API) instead of GKE. The judges
    (Groq labeling, Gemini on Vertex AI evaluation), their settings and the label margin are the profile's."""
    raw = yaml.safe_load((REPO / "deploy" / "personas.production.yaml").read_text())
    d = raw["defaults"]
    d["model"] = {"base": str(model_dir)}
    d["generation"] |= {"num_prompts": 2, "max_new_tokens": 8, "batch_size": 8}
    d["evaluation"] |= {"max_new_tokens": 8}
    d["training"] |= {"batch_size": 2, "grad_accum": 1, "max_length": 128, "max_prompt_length": 96, "lora_r": 4, "lora_alpha": 8}
    d["kubernetes"] |= {"gke": False}
    path = tmp_path / "personas.production.tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_persona_dag_on_kubernetes_publishes_through_gcs(fresh_airflow_home, tiny_model_dir, feedback_db, gcs_uri, tmp_path):  # noqa: F811
    # An Airflow DB of its own: the model's asset (persona-dpo-model:<persona>) has the URI of the store's
    # LATEST, and the session's shared DB already holds that asset name for another test's local store; a
    # second URI under one asset name is an inactive asset and fails publish (a deployment has one store).
    airflow_home = fresh_airflow_home
    from dpo_tasks.orchestration.common import safe_run_id
    from dpo_tasks.store import open_store

    url, max_id = feedback_db
    personas = tiny_production_profile(tmp_path, tiny_model_dir)
    profile = yaml.safe_load(personas.read_text())["defaults"]
    assert (profile["labeling"]["judge"], profile["evaluation"]["judge"]) == ("groq", "gemini")
    # The gate's threshold is the one thing the run conf lowers (as a user's trigger may): the tiny
    # random model cannot beat anything, and this test is about the run reaching a published version.
    conf = {"num_prompts": 2, "epochs": 1, "min_win_rate_lower_bound": 0.0,
            "feedback": {"persona_id": PERSONA, "from_id": 0, "to_id": max_id}}
    with FakeLLMServer("groq") as groq, FakeLLMServer("gemini") as gemini, FakeKubernetes({"hf-token": {"token": TOKEN}}) as k8s:
        # The worker's Google identity (workload identity in the deployment): Application Default
        # Credentials, a service-account key whose token exchange goes to the local Vertex AI server.
        adc = tmp_path / "adc.json"
        adc.write_text(json.dumps(service_account_key(f"{gemini.url}/token", "persona-dpo-prod")))
        # The connections as docs/deployment.md creates them: the Groq key as a password, and
        # google_cloud_default without a key (credentials from ADC), only the project.
        connections = {
            "AIRFLOW_CONN_KUBERNETES_DEFAULT": {"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(k8s.kubeconfig)}},
            "AIRFLOW_CONN_GROQ_DEFAULT": {"conn_type": "generic", "password": GROQ_KEY},
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": {"conn_type": "google_cloud_platform", "extra": {"project": "persona-dpo-prod"}},
        }
        result, output = run_dag_test(
            airflow_home, f"dpo_{PERSONA}", conf, timeout=900,
            PERSONA_DPO_PERSONAS=str(personas), FEEDBACK_DB_URL=url, PERSONA_DPO_STORE=f"{gcs_uri}/store",
            PERSONA_DPO_STAGING=f"{gcs_uri}/staging", PYTHONPATH=f"{WORKER_SITE}:{REPO}",
            GROQ_BASE_URL=groq.url, GOOGLE_VERTEX_BASE_URL=gemini.url, GOOGLE_APPLICATION_CREDENTIALS=str(adc),
            **{name: json.dumps(conn) for name, conn in connections.items()},
        )
        created = [p["metadata"]["labels"]["app.kubernetes.io/component"] for p in k8s.created]
        pod_specs = json.dumps(k8s.created)
        deleted = list(k8s.deleted)
        groq_requests, gemini_requests, gemini_tokens = list(groq.requests), list(gemini.requests), list(gemini.token_requests)

    assert result["state"] == "success", output[-8000:]
    tasks = dict(result["tasks"])
    # sft is off by default: skipped before any pod, and train runs all the same.
    assert tasks.pop("sft") == "skipped", tasks
    assert all(state == "success" for state in tasks.values()), tasks
    # The model stages ran in pods; label (an API judge) and the evaluation's judging on the worker,
    # whose interpreter and subprocesses cannot import torch (PYTHONPATH's worker_site).
    assert created == ["generate", "format", "train", "evaluate_answers"]
    assert len(deleted) == len(created)  # every pod deleted when it finished

    # Labeling reached Groq with the key of the groq_default connection; evaluation reached Vertex AI
    # with a token from the ADC key's exchange, under the profile's project and model.
    assert groq_requests and all(r.path == "/openai/v1/chat/completions" for r in groq_requests)
    assert {r.headers["authorization"] for r in groq_requests} == {f"Bearer {GROQ_KEY}"}
    assert {r.body["model"] for r in groq_requests} == {profile["labeling"].get("groq", {}).get("model", "llama-3.3-70b-versatile")}
    assert gemini_requests and gemini_tokens
    assert {r.headers["authorization"] for r in gemini_requests} == {"Bearer ya29.fake-token-from-the-token-endpoint"}
    assert {r.path for r in gemini_requests} == {
        "/v1beta1/projects/persona-dpo-prod/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"}

    run_dir = airflow_home / "runs" / PERSONA / safe_run_id(result["run_id"])
    label = json.loads((run_dir / "summaries" / "label.json").read_text())
    assert label["judge"] == "groq" and label["accounting"]["calls_made"] == len(groq_requests)
    stats = json.loads((run_dir / "eval" / "summary_stats.json").read_text())
    assert (stats["eval_judge"], stats["label_judge"], stats["same_judge"]) == ("gemini", "groq", False)
    assert stats["judge_accounting"]["calls_made"] == len(gemini_requests) and stats["failed"] == 0

    store = open_store(f"{gcs_uri}/store")
    version = store.latest(PERSONA)
    assert version is not None
    card = store.model_card(PERSONA, version)
    assert (card["labeling_judge"], card["evaluation_judge"], card["gate"]["decision"]) == ("groq", "gemini", "promote")

    # Secrets: neither in the task logs nor in a pod spec (the HF token travels as a Secret reference,
    # the Groq key never leaves the worker), nor in any file the run left.
    assert TOKEN not in output and GROQ_KEY not in output
    assert TOKEN not in pod_specs and GROQ_KEY not in pod_specs
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and GROQ_KEY.encode() in p.read_bytes()]
    assert not leaked


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
