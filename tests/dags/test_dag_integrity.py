"""DagBag integrity: every DAG in dags/ loads, with the settings production relies on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag

from dpo_tasks.config import default_personas_path, load_personas
from dpo_tasks.orchestration.common import OWNER, POOL_A100, POOL_GROQ, TAGS

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
PERSONA_IDS = sorted(load_personas().personas)
DAG_IDS = [f"dpo_{pid}" for pid in PERSONA_IDS] + ["dpo_custom"]


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors_and_nothing_unexpected(dagbag):
    assert dagbag.import_errors == {}
    # feedback_monitor belongs to the feedback loop; every other DAG is one of ours.
    assert set(dagbag.dag_ids) - {"feedback_monitor"} == set(DAG_IDS)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dag_settings(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag is not None
    assert dag.tags and set(dag.tags) <= TAGS, dag.tags
    assert dag.owner == OWNER
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert dag.dagrun_timeout is not None
    assert dag.doc_md and len(dag.doc_md) > 200
    assert dag.on_failure_callback
    for t in dag.tasks:
        assert t.owner == OWNER, t.task_id
        assert t.retries >= 1, t.task_id
        assert t.retry_exponential_backoff > 1, t.task_id
        assert t.on_failure_callback, t.task_id
    tasks = {t.task_id: t for t in dag.tasks}
    chain = ["train", "evaluate_answers", "evaluate", "gate", "publish"]
    for up, down in zip(chain, chain[1:]):
        assert down in tasks[up].downstream_task_ids, (up, down)
    # personas.yaml runs every stage locally: no pod in the DAG.
    assert {type(t).__name__ for t in dag.tasks} == {"StageOperator"}


@pytest.mark.parametrize("persona_id", PERSONA_IDS)
def test_persona_dag_pipeline_and_form(dagbag, persona_id):
    dag = dagbag.dags[f"dpo_{persona_id}"]
    assert persona_id in dag.doc_md
    chain = ["prepare", "feedback_export", "generate", "label", "format", "sft", "train"]
    for up, down in zip(chain, chain[1:]):
        assert down in dag.get_task(up).downstream_task_ids, (up, down)
    assert dag.get_task("label").pool == POOL_GROQ
    assert set(dag.params) >= {"num_prompts", "judge", "eval_judge", "min_win_rate_lower_bound", "epochs", "dry_run"}
    # Where a run executes is the deployment's choice, not the form's.
    assert not {"training_runner", "runner"} & set(dag.params)
    assert dag.schedule == load_personas().personas[persona_id].config.schedule


def write_personas(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(default_personas_path().read_text())
    edit(raw)
    path = tmp_path / "personas.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        pytest.param(lambda p: p.setdefault("overrides", {}).update(training={"epochs": -1}),
                     ["overrides.training.epochs", "-1"], id="out-of-range"),
        pytest.param(lambda p: p.update(config={"gate": {"min_win_rate_lower_bound": 0.9}}),
                     ["unknown field 'config'", "go under 'overrides'"], id="config-instead-of-overrides"),
        pytest.param(lambda p: p.setdefault("overrides", {}).update(schedule="0 25 * * *"),
                     ["overrides.schedule", "'0 25 * * *'"], id="invalid-cron"),
        pytest.param(lambda p: p.setdefault("overrides", {}).update(kubernetes={"train": {"memory": "lots"}}),
                     ["overrides.kubernetes.train.memory", "'lots' is not a Kubernetes quantity"], id="memory-lots"),
    ],
)
def test_one_bad_persona_is_an_import_error_naming_it_and_the_others_still_load(tmp_path, monkeypatch, edit, fragments):
    def break_one(raw):
        edit(raw["personas"][1])

    monkeypatch.setenv("PERSONA_DPO_PERSONAS", str(write_personas(tmp_path, break_one)))
    bag = DagBag(dag_folder=str(DAGS))
    bad = PERSONA_IDS[1]
    assert f"dpo_{bad}" not in bag.dag_ids
    assert set(bag.dag_ids) >= {f"dpo_{pid}" for pid in PERSONA_IDS if pid != bad} | {"dpo_custom"}
    (error,) = [v for k, v in bag.import_errors.items() if k.endswith("persona_config_check.py")]
    assert f"dpo_{bad}" in error
    for fragment in fragments:
        assert fragment in error
    assert not [k for k in bag.import_errors if not k.endswith("persona_config_check.py")]


PRODUCTION = REPO / "deploy" / "personas.production.yaml"
POD_TASKS = {"generate", "label", "format", "sft", "train", "evaluate_answers"}


def test_production_profile_builds_every_dag_with_the_model_stages_on_pods(monkeypatch):
    monkeypatch.setenv("PERSONA_DPO_PERSONAS", str(PRODUCTION))
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) - {"feedback_monitor"} == set(DAG_IDS)
    for dag_id in DAG_IDS:
        tasks = {t.task_id: t for t in bag.dags[dag_id].tasks}
        pods = {tid for tid, t in tasks.items() if type(t).__name__ == "StagePodOperator"}
        assert pods == POD_TASKS & set(tasks), dag_id
        assert {type(tasks[t]).__name__ for t in set(tasks) - pods} == {"StageOperator"}, dag_id
        # GPU pods take an A100 pool slot; label keeps the Groq pool, format is a CPU pod.
        assert all(tasks[t].pool == POOL_A100 for t in pods - {"label", "format"}), dag_id
        assert tasks["train"].pool == POOL_A100 and tasks.get("label", tasks["train"]).pool in (POOL_GROQ, POOL_A100)
        # The task's timeout is the stage pod's, from the profile (8 h for training there).
        assert tasks["train"].execution_timeout.total_seconds() == 28800


def test_production_profile_parse_imports_nothing_heavy():
    env = {k: v for k, v in __import__("os").environ.items() if k != "_AIRFLOW_PARSING_CONTEXT_DAG_ID"}
    env["PERSONA_DPO_PERSONAS"] = str(PRODUCTION)
    out = subprocess.run([sys.executable, "-c", PARSE_SCRIPT, str(DAGS)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [] and sorted(result["dags"]) == sorted(DAG_IDS)


def test_schedule_is_overridable_per_persona(tmp_path, monkeypatch):
    def daily(raw):
        raw["personas"][0].setdefault("overrides", {})["schedule"] = "0 3 * * *"
        raw["personas"][2].setdefault("overrides", {})["schedule"] = None

    monkeypatch.setenv("PERSONA_DPO_PERSONAS", str(write_personas(tmp_path, daily)))
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert bag.dags[f"dpo_{PERSONA_IDS[0]}"].schedule == "0 3 * * *"
    assert bag.dags[f"dpo_{PERSONA_IDS[2]}"].schedule is None
    assert bag.dags[f"dpo_{PERSONA_IDS[3]}"].schedule == load_personas().personas[PERSONA_IDS[3]].config.schedule


PARSE_SCRIPT = """
import json, os, runpy, sys
found = []
for f in sorted(os.listdir(sys.argv[1])):
    if f.endswith(".py") and f != "feedback_monitor.py":
        g = runpy.run_path(os.path.join(sys.argv[1], f))
        found += sorted(k for k, v in g.items() if type(v).__name__ == "DAG")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "trl", "peft", "groq", "kubernetes",
               "datasets", "accelerate") or m.startswith(("google.genai", "google.cloud.storage", "google.auth",
               "airflow.providers.google.cloud", "airflow.providers.cncf.kubernetes.operators")))
print(json.dumps({"dags": found, "heavy": heavy}))
"""


@pytest.mark.parametrize(
    "context_dag_id, expected",
    [
        pytest.param(None, DAG_IDS, id="dag-processor-builds-all"),
        pytest.param("dpo_persona_d_japanese_lowsodium", ["dpo_persona_d_japanese_lowsodium"], id="task-run-builds-one"),
        pytest.param("dpo_custom", ["dpo_custom"], id="custom-task-run"),
    ],
)
def test_parse_imports_nothing_heavy_and_builds_only_the_running_dag(context_dag_id, expected):
    env = {k: v for k, v in __import__("os").environ.items() if k != "_AIRFLOW_PARSING_CONTEXT_DAG_ID"}
    if context_dag_id:
        env["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = context_dag_id
    out = subprocess.run([sys.executable, "-c", PARSE_SCRIPT, str(DAGS)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert sorted(d for d in result["dags"]) == sorted(expected)
