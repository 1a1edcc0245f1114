"""
# One DPO DAG per persona (`dpo_<persona_id>`), built for Airflow

Built from personas.yaml (`$PERSONA_DPO_PERSONAS` to use another file): generate → label →
format → train (local subprocess or an A100 pod) → evaluate → gate → publish. The wiring lives in
`dpo_tasks.orchestration.factory`; at task run time only the running DAG is built.
"""

from dpo_tasks.orchestration.factory import build_persona_dags

globals().update(build_persona_dags())
