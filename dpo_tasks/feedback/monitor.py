"""The `feedback_monitor` DAG: per persona, wait for drift, claim it, start `dpo_<persona_id>` once.

    <persona_id>.wait_for_drift ─► <persona_id>.claim ─► <persona_id>.trigger_dpo

- `wait_for_drift`: `FeedbackThresholdSensor`, deferred to the triggerer (no worker slot) until
  the persona's feedback above its watermark crosses its threshold; skipped (soft fail) when the
  monitor run's window ends without one.
- `claim`: in one transaction, locks the persona's watermark row, re-checks the rule and moves
  the watermark past the window (`rule.claim_crossing`). A retry of this task gets the same
  claim back (keyed by the monitor run); another monitor finds nothing left to claim and skips.
- `trigger_dpo`: `TriggerDagRunOperator` with a run id derived from the claimed window, so a
  retry cannot start a second run; conf `{"feedback": {persona_id, from_id, to_id, total, good, ...}}`
  tells the persona DAG which feedback to export into its training data.

The DAG file `dags/feedback_monitor.py` only calls `build_monitor_dag()`.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, BaseOperator, TaskGroup, task

from dpo_tasks.config import Persona, load_personas_lenient
from dpo_tasks.feedback.db import DEFAULT_CONN_ID
from dpo_tasks.feedback.sensor import FeedbackThresholdSensor
from dpo_tasks.orchestration.common import dag_policy

log = logging.getLogger(__name__)

DAG_ID = "feedback_monitor"
TAGS = ["persona-dpo", "feedback"]
# Each monitor run watches for one window; the next run picks up where it left off.
SCHEDULE = timedelta(minutes=30)
WATCH_FOR = timedelta(minutes=28)
POLL_INTERVAL = timedelta(minutes=1)

DOC = """\
# Feedback monitor: retrain the persona whose feedback drifts

Users' thumbs-up/down on recipes land in the `feedback` table of the Postgres connection
`feedback_db`. Every 30 minutes this DAG watches each persona's ratings newer than its watermark
(the last rating a triggered run consumed). When, for a persona,

    new ratings >= feedback.min_feedback  and  good / new <= feedback.max_good_ratio

and `feedback.cooldown_hours` have passed since its last trigger (all in personas.yaml), it
starts `dpo_<persona_id>` once, with run conf `{"feedback": {persona_id, from_id, to_id, total,
good}}`; that run exports the window's good-vs-bad answers as preference pairs and its badly rated
prompts as extra prompts.

| task | does |
| --- | --- |
| `<persona>.wait_for_drift` | deferrable sensor: the triggerer polls Postgres; skipped when no drift this window |
| `<persona>.claim` | moves the watermark and records the claim in one transaction (exactly one run per crossing) |
| `<persona>.trigger_dpo` | starts `dpo_<persona>` with a run id derived from the window (retries cannot double it) |

A database outage is logged and retried by the trigger with backoff; it never fires on partial data.
`python -m dpo_tasks feedback-status` shows every persona's numbers from the command line.
"""


def claim_for_monitor(persona_id: str, personas_path: str | None = None, conn_id: str = DEFAULT_CONN_ID) -> dict[str, Any]:
    """Task callable: claim the persona's crossing or skip. Returns {trigger_dag_id, run_id, conf}."""
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowSkipException

    from dpo_tasks.config import load_persona
    from dpo_tasks.feedback.db import connect
    from dpo_tasks.feedback.rule import claim_crossing

    ctx = get_current_context()
    persona = load_persona(persona_id, personas_path)
    claim_key = f"{ctx['dag'].dag_id}/{ctx['run_id']}/{persona_id}"
    conn = connect(conn_id=conn_id)
    try:
        claim, decision = claim_crossing(conn, persona_id, persona.config.feedback, claim_key=claim_key)
    finally:
        conn.close()
    if claim is None:
        raise AirflowSkipException(f"persona {persona_id}: nothing to claim ({decision.reason})")
    log.info("persona %s: claimed feedback (%d, %d] for %s: %s", persona_id, claim.from_id, claim.to_id, persona.dag_id, decision.reason)
    return {"trigger_dag_id": persona.dag_id, "run_id": claim.run_id, "conf": claim.conf()}


class TriggerPersonaRunOperator(BaseOperator):
    """Starts the persona's DAG run with the claimed window, once.

    The standard provider's TriggerDagRunOperator imports Airflow core (the ORM
    models) at module level, which roughly tripled the parse time of dags/; it is
    built here only when the task runs, on the worker.
    """

    template_fields = ("trigger_dag_id", "trigger_run_id", "conf")

    def __init__(self, *, trigger_dag_id: str, trigger_run_id: Any, conf: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trigger_dag_id = trigger_dag_id
        self.trigger_run_id = trigger_run_id
        self.conf = conf
        # With a run id derived from the window, a retried task cannot start a second run.
        self.skip_when_already_exists = True

    def execute(self, context: Any) -> Any:
        from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

        return TriggerDagRunOperator(
            task_id=self.task_id,
            trigger_dag_id=self.trigger_dag_id,
            trigger_run_id=self.trigger_run_id,
            conf=self.conf,
            skip_when_already_exists=self.skip_when_already_exists,
            openlineage_inject_parent_info=False,
        ).execute(context)


def _persona_group(persona: Persona, personas_path: str | None, conn_id: str, watch_for: timedelta, poll_interval: timedelta) -> None:
    rule = persona.config.feedback
    with TaskGroup(persona.id, tooltip=f"feedback threshold for {persona.name}"):
        wait = FeedbackThresholdSensor(
            task_id="wait_for_drift",
            persona_id=persona.id,
            min_feedback=rule.min_feedback,
            max_good_ratio=rule.max_good_ratio,
            cooldown_hours=rule.cooldown_hours,
            conn_id=conn_id,
            poke_interval=poll_interval,
            timeout=watch_for,
            soft_fail=True,
        )
        claim = task(claim_for_monitor, task_id="claim")(persona.id, personas_path, conn_id)
        trigger = TriggerPersonaRunOperator(
            task_id="trigger_dpo",
            trigger_dag_id=persona.dag_id,
            trigger_run_id=claim["run_id"],
            conf=claim["conf"],
        )
        wait >> claim >> trigger


def build_monitor_dag(
    personas_path: str | None = None,
    conn_id: str = DEFAULT_CONN_ID,
    *,
    watch_for: timedelta = WATCH_FOR,
    poll_interval: timedelta = POLL_INTERVAL,
) -> DAG:
    """The monitor DAG; `watch_for`/`poll_interval` are each sensor's timeout and poll period."""
    personas = load_personas_lenient(personas_path)
    with DAG(
        dag_id=DAG_ID,
        description="Start a persona's DPO run when its users' feedback says the model drifts",
        doc_md=DOC,
        schedule=SCHEDULE,
        dagrun_timeout=SCHEDULE + timedelta(minutes=15),
        **dag_policy(),
        tags=TAGS,
    ) as dag:
        for persona in personas.personas.values():
            _persona_group(persona, personas_path, conn_id, watch_for, poll_interval)
    for pid in personas.errors:
        log.error("persona %r is not monitored: its personas.yaml entry is invalid", pid)
    return dag
