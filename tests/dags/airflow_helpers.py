"""Helpers for tests that run DAGs: the environment of a throwaway Airflow home, and `dag.test()` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "_AIRFLOW_PARSING"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="120",
        PYTHONPATH=str(REPO),
        PERSONA_DPO_RUNS=str(home / "runs"),
        PERSONA_DPO_STORE=str(home / "store"),
        PERSONA_DPO_DVC_REMOTE=str(home / "dvc-remote"),
    )
    env.update(extra)
    return env


def run_dag_test(home: Path, dag_id: str, conf: dict, *, timeout: int = 900, **env: str) -> tuple[dict, str]:
    """`dag.test()` in a subprocess; returns (result, full output)."""
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("dag_test_run.py")), dag_id, json.dumps(conf)],
            env=airflow_env(home, **env), capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
        raise AssertionError(f"dag.test() of {dag_id} ran past {timeout}s:\n{out[-6000:]}") from None
    output = proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("DAG_TEST_RESULT ")]
    assert lines, f"dag.test() did not finish (rc {proc.returncode}):\n{output[-6000:]}"
    return json.loads(lines[-1].removeprefix("DAG_TEST_RESULT ")), output
