"""With the Kubernetes runner, nothing that runs on the Airflow worker imports the training stack.

The production Airflow image has no torch: every task the worker executes (prepare, feedback
export, API/rule labeling, format, judging, gate, publish, DVC) must work without torch,
transformers, trl or peft, while generate, train and evaluate's answers run in their pods.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dpo_tasks.config import load_persona
from dpo_tasks.runs import write_jsonl
from dpo_tasks.validate import toy_records
from tests.dpo_tasks.store.conftest import gcs_emulator, gcs_uri  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
PERSONA = "persona_e_mexican_vegan"


def tiny_production_profile(tmp_path: Path, model_dir: Path) -> Path:
    """The production profile with only the model swapped for the tiny test model, offline judges
    (no API servers needed for this check) and a plain Kubernetes cluster."""
    raw = yaml.safe_load((REPO / "deploy" / "personas.production.yaml").read_text())
    d = raw["defaults"]
    d["model"] = {"base": str(model_dir)}
    d["generation"] |= {"num_prompts": 2, "max_new_tokens": 8, "batch_size": 8}
    d["labeling"] = {"judge": "rules", "min_margin": 0}
    d["evaluation"] = {"judge": "checklist", "max_new_tokens": 8}
    d["training"] |= {"epochs": 1, "batch_size": 2, "grad_accum": 1, "max_length": 128, "max_prompt_length": 96}
    d["gate"] = {"min_win_rate_lower_bound": 0.0}
    d["kubernetes"] |= {"gke": False}
    path = tmp_path / "personas.production.tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_worker_tasks_run_without_the_training_stack(tmp_path, tiny_model_dir, gcs_uri):
    """The store and the staging area are on gcp-storage-emulator: the pods share nothing with
    the worker but what goes through gs://."""
    personas = tiny_production_profile(tmp_path, tiny_model_dir)
    pairs = tmp_path / "feedback_pairs.jsonl"
    write_jsonl(pairs, [r | {"id": f"fb{i}", "source": "feedback"} for i, r in enumerate(toy_records(load_persona(PERSONA), 4, seed=3))])
    env = {
        **os.environ, "PYTHONPATH": str(HERE / "worker_site"),
        "PERSONA_DPO_RUNS": str(tmp_path / "runs"), "PERSONA_DPO_STORE": f"{gcs_uri}/store",
        "PERSONA_DPO_DVC_REMOTE": str(tmp_path / "dvc-remote"),
        # The Secret the profile's pods read the Hugging Face token from (secretKeyRef).
        "TEST_SECRETS": json.dumps({"hf-token": {"token": "hf_test_token_value"}}),
    }
    # The block works: the worker interpreter cannot import torch.
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr

    proc = subprocess.run([sys.executable, str(HERE / "k8s_worker_run.py"), PERSONA, str(personas), str(pairs)],
                          env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["pod"] == ["generate", "format", "train", "evaluate_answers"]
    assert report["skipped"] == ["sft"]  # off by default: no pod, no worker subprocess
    assert set(report["worker"]) >= {"prepare", "feedback_export", "label", "evaluate", "gate", "publish", "version_data"}
    assert not set(report["worker"]) & set(report["pod"])
    assert report["heavy"] == []
    # The token reached the pods through the Secret only: never the worker's output or the run dir.
    assert "hf_test_token_value" not in proc.stdout + proc.stderr
    assert not any("hf_test_token_value" in p.read_text(errors="ignore") for p in Path(report["run_dir"]).rglob("*") if p.is_file())
    publish = json.loads((Path(report["run_dir"]) / "publish.json").read_text())
    assert publish["published"] and publish["uri"].startswith(f"{gcs_uri}/store/")
