"""The microservice API plugin: what it mounts, and the ids it accepts. Its HTTP behaviour behind
Airflow's auth is tested on the live API server (tests/dags/test_airflow_live.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "persona_dpo_api.py"


def test_the_plugin_mounts_the_microservice_routes_at_persona_dpo():
    spec = importlib.util.spec_from_file_location("persona_dpo_api", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    [mounted] = module.PersonaDpoApiPlugin.fastapi_apps
    assert mounted["url_prefix"] == "/persona-dpo"
    routes = {(route.path, method) for route in mounted["app"].routes for method in getattr(route, "methods", ())}
    assert {("/health", "GET"), ("/trigger-finetune", "POST"), ("/policies/{policy_id}", "GET")} <= routes


@pytest.mark.parametrize(
    ("policy_id", "namespace"),
    [
        pytest.param("vegan-bakers", "policies/vegan-bakers", id="community"),
        pytest.param("persona_e_mexican_vegan", "persona_e_mexican_vegan", id="persona"),
        pytest.param("../etc", None, id="traversal"),
        pytest.param("Vegan", None, id="uppercase"),
    ],
)
def test_policy_ids_map_to_store_namespaces_or_are_refused(policy_id, namespace):
    from fastapi import HTTPException

    from dpo_tasks.orchestration.api import _namespace

    if namespace is None:
        with pytest.raises(HTTPException) as exc:
            _namespace(policy_id)
        assert exc.value.status_code == 400
    else:
        assert _namespace(policy_id) == namespace
