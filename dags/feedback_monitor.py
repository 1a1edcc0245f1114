"""
# Feedback monitor (`feedback_monitor`)

Every 30 minutes, per persona: wait (deferred, in the triggerer) until the persona's new feedback in
the `feedback_db` Postgres connection crosses its personas.yaml threshold, claim that window in one
transaction, and start `dpo_<persona_id>` once with it in the run conf. Wiring in
`dpo_tasks.feedback.monitor`.
"""

from airflow.sdk import get_parsing_context

from dpo_tasks.feedback.monitor import DAG_ID, build_monitor_dag

if get_parsing_context().dag_id in (None, DAG_ID):
    feedback_monitor = build_monitor_dag()
