"""A throwaway Airflow home (SQLite metadata DB, this repo's dags/) for tests that run DAGs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.airflow_helpers import airflow_env


def _migrated_home(home: Path) -> Path:
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=airflow_env(home),
                   check=True, capture_output=True, timeout=300)
    return home


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _migrated_home(tmp_path_factory.mktemp("airflow_home"))


@pytest.fixture
def fresh_airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow home no other test has run DAGs in, for tests that count every DAG run."""
    return _migrated_home(tmp_path_factory.mktemp("fresh_airflow_home"))
