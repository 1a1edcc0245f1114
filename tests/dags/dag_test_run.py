"""Run one DAG with `dag.test()` and print every task's final state as the last line (JSON).

    python tests/dags/dag_test_run.py DAG_ID '{"run": "conf"}'

A separate process, so each run gets the Airflow settings (AIRFLOW_HOME, database) its test chose.
"""

import json
import os
import sys

from airflow.dag_processing.dagbag import DagBag
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

dag_id, conf = sys.argv[1], json.loads(sys.argv[2])
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
dr = bag.dags[dag_id].test(run_conf=conf)
with create_session() as session:
    tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == dr.run_id)).all()
    states = {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in tis}
print("DAG_TEST_RESULT " + json.dumps({"state": str(dr.state), "run_id": dr.run_id, "tasks": states}))
