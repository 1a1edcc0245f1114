"""Whole DAG runs with `dag.test()` on the tiny model and the local runner (the same task ids as
the kubernetes runner's: only where the model stages execute differs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from dpo_tasks.config import load_persona
from dpo_tasks.validate import toy_records
from tests.dags.airflow_helpers import REPO, run_dag_test

pytestmark = pytest.mark.slow

PERSONA = "persona_e_mexican_vegan"
PG_ADMIN = os.environ.get("PERSONA_DPO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def tiny_personas(tmp_path, tiny_model_dir):
    """The shipped personas on the tiny model: a deployment setting, so it comes from a personas file
    ($PERSONA_DPO_PERSONAS), not from the run's conf (which may not set `model.base`)."""
    import yaml

    from dpo_tasks.config import default_personas_path

    raw = yaml.safe_load(default_personas_path().read_text())
    d = raw.setdefault("defaults", {})
    d.setdefault("model", {})["base"] = str(tiny_model_dir)
    d.setdefault("generation", {}).update(max_new_tokens=8, batch_size=8)
    d.setdefault("evaluation", {})["max_new_tokens"] = 8
    d.setdefault("training", {}).update(batch_size=2, grad_accum=1, max_length=128, max_prompt_length=96, lora_r=4, lora_alpha=8)
    d.setdefault("labeling", {})["min_margin"] = 0
    path = tmp_path / "personas.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


@pytest.fixture
def feedback_db():
    """Feedback in a throwaway database: the tiny model's own answers tie under the rule judge,
    so this run's preference pairs come from users' ratings, as in a feedback-triggered run."""
    import psycopg2

    from dpo_tasks.feedback.db import create_database, drop_database, migrate

    url = create_database(PG_ADMIN, prefix="test_dags")
    conn = psycopg2.connect(url)
    try:
        migrate(conn)
        rows = []
        for rec in toy_records(load_persona(PERSONA), 4, seed=3):
            rows += [(PERSONA, rec["prompt"], rec["chosen"], "good"), (PERSONA, rec["prompt"], rec["rejected"], "bad")]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO feedback (persona_id, prompt, response, rating) VALUES (%s, %s, %s, %s)", rows)
            cur.execute("SELECT max(id) FROM feedback")
            (max_id,) = cur.fetchone()
        conn.commit()
    finally:
        conn.close()
    yield url, max_id
    drop_database(PG_ADMIN, url)


def consumer_dags_folder(tmp_path: Path) -> Path:
    """This repo's DAG files plus the deployment DAG of docs/tracking.md, the code block as written."""
    text = (REPO / "docs" / "tracking.md").read_text()
    block = re.search(r"An example deployment DAG.*?```python\n(.*?)```", text, re.S)
    assert block, "docs/tracking.md lost its example deployment DAG"
    folder = tmp_path / "dags"
    shutil.copytree(REPO / "dags", folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "deploy_persona_e_mexican_vegan.py").write_text(block.group(1))
    return folder


def test_persona_dag_runs_every_stage_and_publishes(airflow_home, tiny_personas, feedback_db, tmp_path):
    url, max_id = feedback_db
    conf = {
        "num_prompts": 2, "epochs": 1, "min_win_rate_lower_bound": 0.0,
        "feedback": {"persona_id": PERSONA, "from_id": 0, "to_id": max_id},
    }
    # The deployment DAG scheduled on this persona's model asset is in the same bundle, unpaused.
    result, output = run_dag_test(
        airflow_home, f"dpo_{PERSONA}", conf, FEEDBACK_DB_URL=url, PERSONA_DPO_PERSONAS=tiny_personas,
        AIRFLOW__CORE__DAGS_FOLDER=str(consumer_dags_folder(tmp_path)), AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
    )

    assert result["state"] == "success", output[-6000:]
    tasks = dict(result["tasks"])
    # sft is off unless turned on (sft.enabled): skipped, and train ran after it all the same.
    assert tasks.pop("sft") == "skipped", tasks
    # Every other task ran: with the runner fixed per deployment there is no branch left to skip.
    assert all(state == "success" for state in tasks.values()), tasks

    run_dir = airflow_home / "runs" / PERSONA / _safe(result["run_id"])
    publish = json.loads((run_dir / "publish.json").read_text())
    assert publish["published"] and publish["latest_moved"]
    store = airflow_home / "store" / PERSONA
    assert (store / "LATEST").read_text().strip() == publish["version"]
    card = json.loads((store / publish["version"] / "model_card.json").read_text())
    assert card  # the model card travelled with the version
    labeled = [json.loads(ln) for ln in (run_dir / "labeled.jsonl").read_text().splitlines()]
    assert labeled and all(r["source"] == "feedback" for r in labeled)

    # The promotion is an asset event of the persona's model, and the deployment DAG is queued.
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        events = db.execute(
            "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.name = ? AND e.source_dag_id = ? AND e.source_run_id = ?",
            (f"persona-dpo-model:{PERSONA}", f"dpo_{PERSONA}", result["run_id"]),
        ).fetchall()
        queued = db.execute(
            "SELECT q.target_dag_id FROM asset_dag_run_queue q JOIN asset a ON a.id = q.asset_id WHERE a.name = ?",
            (f"persona-dpo-model:{PERSONA}",),
        ).fetchall()
    assert len(events) == 1, events
    uri, extra = events[0]
    assert uri == (store / "LATEST").as_uri()
    assert json.loads(extra)["version"] == publish["version"]
    assert ("deploy_persona_e_mexican_vegan",) in queued


def test_custom_dag_gate_refuses_and_publish_is_skipped_with_the_reason(airflow_home, tiny_personas):
    rows = toy_records(load_persona(PERSONA), 6, seed=1)
    bad = [{"prompt": "p", "chosen": "same", "rejected": "same"}, {"prompt": "only a prompt"}]
    conf = {
        "communityId": "vegan-bakers", "dataset": rows + bad, "min_win_rate_lower_bound": 1.0, "epochs": 1,
    }
    result, output = run_dag_test(airflow_home, "dpo_custom", conf, PERSONA_DPO_PERSONAS=tiny_personas)

    assert result["state"] == "success", output[-6000:]
    tasks = result["tasks"]
    assert tasks["publish"] == "skipped"
    assert all(tasks[t] == "success" for t in ("prepare", "train", "evaluate_answers", "evaluate", "gate", "version_data")), tasks
    assert "not publishing: the gate rejected the candidate: win-rate lower bound" in output
    # Bad rows are named in the log; the good ones trained.
    assert "dataset row rejected: item 6" in output and "dataset row rejected: item 7" in output
    assert not (airflow_home / "store" / "policies" / "vegan-bakers" / "LATEST").exists()


def test_custom_dag_fails_when_no_row_is_usable(airflow_home):
    conf = {"communityId": "empty-club", "dataset": [{"prompt": "x", "chosen": "", "rejected": "y"}]}
    result, output = run_dag_test(airflow_home, "dpo_custom", conf, timeout=300)
    assert result["state"] == "failed"
    assert result["tasks"]["prepare"] == "failed"
    assert "no usable row in the dataset" in output
    assert "PERSONA DPO FAILURE: dpo_custom run" in output


def _safe(run_id: str) -> str:
    from dpo_tasks.orchestration.common import safe_run_id

    return safe_run_id(run_id)
