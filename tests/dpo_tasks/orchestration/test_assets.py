"""The served model as an Airflow asset: URIs, and what the publish task puts into its outlet event."""

from __future__ import annotations

import pytest

from dpo_tasks.orchestration.assets import COMMUNITY_ALIAS, community_alias, emit_promotion, latest_uri, model_asset


@pytest.mark.parametrize(
    ("store", "namespace", "want"),
    [
        pytest.param("gs://bkt/models/", "persona_b_indian_veg", "gs://bkt/models/persona_b_indian_veg/LATEST", id="gcs"),
        pytest.param("/srv/store", "policies/vegan-bakers", "file:///srv/store/policies/vegan-bakers/LATEST", id="local-community"),
        pytest.param("file:///srv/store", "persona_x", "file:///srv/store/persona_x/LATEST", id="file-uri"),
    ],
)
def test_the_asset_uri_is_the_store_uri_of_latest(store, namespace, want):
    assert latest_uri(namespace, store) == want
    assert model_asset(namespace, store).uri == want


def test_a_relative_local_store_resolves_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PERSONA_DPO_STORE", "store")
    assert model_asset("persona_x").uri == (tmp_path / "store" / "persona_x" / "LATEST").as_uri()
    assert model_asset("persona_x").name == "persona-dpo-model:persona_x"


def _published(namespace):
    return {"namespace": namespace, "version": "v20261203T000000.000000Z-0123abcd", "uri": f"/s/{namespace}/v1", "previous": None}


def test_a_persona_publish_sets_the_extra_of_its_declared_asset(monkeypatch, tmp_path):
    from airflow.sdk.execution_time.context import OutletEventAccessors

    monkeypatch.setenv("PERSONA_DPO_STORE", str(tmp_path))
    events = OutletEventAccessors()
    emit_promotion({"outlet_events": events}, {"run_id": "manual__1"}, _published("persona_x"))
    extra = events[model_asset("persona_x")].extra
    assert extra["version"] == "v20261203T000000.000000Z-0123abcd" and extra["run_id"] == "manual__1"


def test_a_community_publish_attaches_its_asset_to_the_alias(monkeypatch, tmp_path):
    from airflow.sdk.execution_time.context import OutletEventAccessors

    monkeypatch.setenv("PERSONA_DPO_STORE", str(tmp_path))
    events = OutletEventAccessors()
    emit_promotion({"outlet_events": events}, {"run_id": "r", "community": "vegan-bakers"}, _published("policies/vegan-bakers"))
    [alias_event] = events[community_alias()].asset_alias_events
    assert alias_event.source_alias_name == COMMUNITY_ALIAS
    assert alias_event.dest_asset_key.name == "persona-dpo-model:policies/vegan-bakers"
    assert alias_event.extra["namespace"] == "policies/vegan-bakers"
