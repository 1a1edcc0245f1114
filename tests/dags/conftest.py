"""A throwaway Airflow home (SQLite metadata DB, this repo's dags/) for tests that run DAGs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.airflow_helpers import airflow_env


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow_home")
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=airflow_env(home),
                   check=True, capture_output=True, timeout=300)
    return home
