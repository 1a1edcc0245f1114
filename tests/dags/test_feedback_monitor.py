"""The feedback_monitor DAG: structure, and end to end against the real PostgreSQL with `dag.test()`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag

from dpo_tasks.config import default_personas_path, load_personas
from dpo_tasks.feedback.db import create_database, drop_database, migrate
from dpo_tasks.orchestration.common import OWNER, TAGS

REPO = Path(__file__).resolve().parents[2]
ADMIN_URL = os.environ.get("PERSONA_DPO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PERSONA_IDS = sorted(load_personas().personas)
DRIFTING = "persona_c_italian_gf"


@pytest.fixture(scope="module")
def monitor():
    bag = DagBag(dag_folder=str(REPO / "dags" / "feedback_monitor.py"))
    assert bag.import_errors == {}
    return bag.dags["feedback_monitor"]


def test_monitor_dag_settings(monitor):
    assert set(monitor.tags) <= TAGS and "feedback" in monitor.tags
    assert monitor.owner == OWNER
    assert monitor.max_active_runs == 1 and monitor.catchup is False
    assert monitor.dagrun_timeout is not None and monitor.on_failure_callback
    assert "feedback_db" in monitor.doc_md
    for t in monitor.tasks:
        assert t.retries >= 1 and t.on_failure_callback, t.task_id


@pytest.mark.parametrize("persona_id", PERSONA_IDS)
def test_one_sensor_claim_trigger_chain_per_persona(monitor, persona_id):
    rule = load_personas().personas[persona_id].config.feedback
    wait = monitor.get_task(f"{persona_id}.wait_for_drift")
    claim = monitor.get_task(f"{persona_id}.claim")
    trigger = monitor.get_task(f"{persona_id}.trigger_dpo")
    assert claim.task_id in wait.downstream_task_ids and trigger.task_id in claim.downstream_task_ids
    assert (wait.persona_id, wait.rule) == (persona_id, rule)
    assert wait.deferrable and wait.soft_fail and wait.conn_id == "feedback_db"
    assert trigger.trigger_dag_id == f"dpo_{persona_id}"
    assert trigger.skip_when_already_exists


def test_parsing_the_monitor_imports_no_heavy_module():
    code = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(REPO / 'dags' / 'feedback_monitor.py')!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'groq', 'google.genai', 'psycopg2') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "HEAVY []" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.fixture(scope="module")
def feedback_db():
    url = create_database(ADMIN_URL, prefix="test_feedback_monitor")
    conn = psycopg2.connect(url)
    migrate(conn)
    conn.close()
    yield url
    drop_database(ADMIN_URL, url)


def _add(url: str, persona_id: str, good: int, bad: int) -> None:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO feedback (persona_id, prompt, response, rating) VALUES (%s, %s, %s, %s)",
            [(persona_id, "gluten-free lasagna?", f"rice-noodle lasagna {i}", "good") for i in range(good)]
            + [(persona_id, "gluten-free lasagna?", f"wheat pasta lasagna {i}", "bad") for i in range(bad)],
        )
    conn.close()


def _run_monitor(home: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("feedback_monitor_run.py")), "2"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MONITOR_RESULT ")]
    assert lines, f"monitor dag.test() did not finish (rc {proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}"
    return json.loads(lines[-1].removeprefix("MONITOR_RESULT "))


@pytest.mark.slow
def test_crossing_queues_exactly_one_dpo_run_and_feedback_below_the_rule_none(fresh_airflow_home, feedback_db, tmp_path):
    airflow_home = fresh_airflow_home  # other tests' runs would count as runs the monitor queued
    # min_feedback 20, max_good_ratio 0.5, no cooldown: the second check is held back by the rule alone.
    raw = yaml.safe_load(default_personas_path().read_text())
    raw["defaults"]["feedback"] = {"min_feedback": 20, "max_good_ratio": 0.5, "cooldown_hours": 0}
    personas = tmp_path / "personas.yaml"
    personas.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "_AIRFLOW_PARSING"))}
    env.update(
        AIRFLOW_HOME=str(airflow_home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{airflow_home}/airflow.db",
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="120",
        AIRFLOW_CONN_FEEDBACK_DB=feedback_db,
        PERSONA_DPO_PERSONAS=str(personas),
        PYTHONPATH=str(REPO),
    )

    _add(feedback_db, DRIFTING, good=8, bad=12)      # 20 ratings, 0.4 good: crosses
    _add(feedback_db, "persona_a_korean_spicy", good=30, bad=5)  # plenty, but happy users
    _add(feedback_db, "persona_f_chinese_keto", good=0, bad=19)  # unhappy, one short of 20

    first = _run_monitor(airflow_home, env)
    before = [r for r in first["dpo_runs"] if r["dag_id"] == f"dpo_{DRIFTING}"]
    assert [r["dag_id"] for r in first["dpo_runs"] if r["dag_id"] != f"dpo_{DRIFTING}"] == []
    assert len(before) == 1, first
    run = before[0]
    assert run["run_id"] == f"feedback__{DRIFTING}__0-20"
    assert "queued" in run["state"].lower()
    window = run["conf"]["feedback"]
    assert {k: window[k] for k in ("persona_id", "from_id", "to_id", "total", "good")} == {
        "persona_id": DRIFTING, "from_id": 0, "to_id": 20, "total": 20, "good": 8,
    }
    assert first["tasks"][f"{DRIFTING}.trigger_dpo"] == "success"
    assert first["tasks"]["persona_a_korean_spicy.wait_for_drift"] == "skipped"
    assert first["tasks"]["persona_f_chinese_keto.claim"] == "skipped"

    _add(feedback_db, DRIFTING, good=2, bad=15)  # 17 new ratings: under min_feedback
    second = _run_monitor(airflow_home, env)
    assert second["dpo_runs"] == first["dpo_runs"], "a run was queued below the rule"
    assert second["tasks"][f"{DRIFTING}.wait_for_drift"] == "skipped"
