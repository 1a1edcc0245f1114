"""Names and defaults every Persona DPO DAG shares (the feedback monitor included).

    from dpo_tasks.orchestration.common import dag_policy, POOL_GROQ

    with DAG(dag_id=..., schedule=..., dagrun_timeout=..., **dag_policy()): ...

`dag_policy()` gives the start date, no catchup, one active run, `default_args()` (owner,
retries with exponential backoff, the one-line failure callback) and the DAG-level failure
callback; `on_failure_callback` works both as a task and as a DAG callback.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OWNER = "persona-dpo"
# Every DAG's tags come from this set, so the UI's tag filter stays meaningful.
TAGS = frozenset({"persona-dpo", "dpo", "persona", "community", "feedback"})

# Pools cap what is shared between DAG runs: Groq's per-key rate limit and the A100 node pool.
POOL_GROQ = "persona_dpo_groq"
POOL_A100 = "persona_dpo_a100"
POOLS: dict[str, tuple[int, str]] = {
    POOL_GROQ: (2, "Groq API: concurrent labeling tasks sharing one key's rate limit"),
    POOL_A100: (2, "A100 training slots (one per GPU node the training node pool may scale to)"),
}
# A deferred training task still holds its GPU node: it counts against the A100 pool.
POOLS_INCLUDE_DEFERRED = frozenset({POOL_A100})

RETRIES = 2
RETRY_DELAY = timedelta(minutes=2)
MAX_RETRY_DELAY = timedelta(minutes=30)
DAGRUN_TIMEOUT = timedelta(hours=12)
START_DATE = datetime(2025, 1, 1, tzinfo=timezone.utc)


def runs_root() -> Path:
    """Where run directories live: $PERSONA_DPO_RUNS, else $AIRFLOW_HOME/persona_dpo/runs, else ./runs.

    Every worker that runs a task of the DAG must see the same directory (a shared volume in a
    multi-worker deployment); the training pod never does, it goes through the artifact store.
    """
    if env := os.environ.get("PERSONA_DPO_RUNS"):
        return Path(env)
    if home := os.environ.get("AIRFLOW_HOME"):
        return Path(home) / "persona_dpo" / "runs"
    return Path("runs")


def safe_run_id(run_id: str) -> str:
    """An Airflow run id (`manual__2026-11-22T03:00:00.123+00:00`) as a directory and pod-label-safe name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("._") or "run"


def run_dir_for(namespace: str, run_id: str) -> Path:
    return runs_root() / namespace / safe_run_id(run_id)


def _reason(context: dict[str, Any]) -> str:
    exc = context.get("exception")
    if exc is not None:
        text = " ".join(str(exc).split()) or "(no message)"
        return f"{type(exc).__name__}: {text[:300]}"
    return str(context.get("reason") or "no reason given")


def on_failure_callback(context: dict[str, Any]) -> None:
    """Log one line that says what failed and why, for the task log or the DAG processor log."""
    dag_run = context.get("dag_run")
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    run_id = getattr(dag_run, "run_id", None) or context.get("run_id", "?")
    where = f"{dag_id} run {run_id}"
    if ti is not None and getattr(ti, "task_id", None):
        where += f" task {ti.task_id} try {getattr(ti, 'try_number', '?')}"
    log.error("PERSONA DPO FAILURE: %s failed: %s", where, _reason(context))


def default_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "owner": OWNER,
        "retries": RETRIES,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": MAX_RETRY_DELAY,
        "on_failure_callback": on_failure_callback,
    }
    args.update(overrides)
    return args


def dag_policy() -> dict[str, Any]:
    """DAG arguments every Persona DPO DAG shares: no backfill, one run at a time, retries, a failure line."""
    return {
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "default_args": default_args(),
        "on_failure_callback": on_failure_callback,
    }
