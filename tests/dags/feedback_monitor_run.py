"""Run the feedback monitor once with `dag.test()`; print the DPO runs it queued as the last line (JSON).

    python tests/dags/feedback_monitor_run.py WATCH_SECONDS

A separate process, so it gets the Airflow settings (AIRFLOW_HOME, database, `feedback_db`) its test chose.
The monitor is built by the same factory as `dags/feedback_monitor.py`, with a short watch window.
"""

import json
import sys
from datetime import timedelta

from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

from dpo_tasks.feedback.monitor import build_monitor_dag

watch = float(sys.argv[1])
dag = build_monitor_dag(watch_for=timedelta(seconds=watch), poll_interval=timedelta(seconds=0.5))
dr = dag.test()
with create_session() as session:
    tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dr.run_id)).all()
    tasks = {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in tis}
    runs = [
        {"dag_id": r.dag_id, "run_id": r.run_id, "conf": r.conf, "state": str(r.state), "run_type": str(r.run_type)}
        for r in session.scalars(select(DagRun).where(DagRun.dag_id.like("dpo_%")).order_by(DagRun.id)).all()
    ]
print("MONITOR_RESULT " + json.dumps({"state": str(dr.state), "tasks": tasks, "dpo_runs": runs}))
