"""
# personas.yaml check (no DAG)

Fails to import, with every bad persona's id, field and value, when personas.yaml has invalid
entries; the Airflow UI lists it under DAG import errors. It lives in its own file because an
import error marks every DAG of its file as broken: the valid personas' DAGs in `persona_dpo.py`
keep running.
"""

from dpo_tasks.orchestration.factory import check_personas

check_personas()
