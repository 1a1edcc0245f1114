"""A community's uploaded dataset on GCS (gcp-storage-emulator), through `dpo_custom`'s prepare task:
fetched only from the community's own upload area."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from dpo_tasks.config import load_persona
from dpo_tasks.orchestration import tasks
from dpo_tasks.store.gcs import make_client, split_gs_uri
from dpo_tasks.validate import toy_records

PERSONA = "persona_d_japanese_lowsodium"


def _trigger(monkeypatch, uri: str) -> None:
    params = {"communityId": "tofu-club", "dataset": None, "dataset_uri": uri, "persona": PERSONA, "eval_judge": "rules",
              "epochs": 1, "min_win_rate_lower_bound": 0.5, "dry_run": False, "overrides": {}}
    ctx = {"params": params, "dag_run": SimpleNamespace(conf={}), "run_id": "manual__gcs"}
    monkeypatch.setattr(tasks, "_context", lambda: ctx)


@pytest.fixture
def uploads(gcs_uri, monkeypatch, tmp_path):
    monkeypatch.setenv("PERSONA_DPO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PERSONA_DPO_UPLOAD_PREFIX", f"{gcs_uri}/uploads")
    rows = toy_records(load_persona(PERSONA), 3, seed=4)
    bucket_name, prefix = split_gs_uri(gcs_uri)
    bucket = make_client().bucket(bucket_name)
    for community in ("tofu-club", "other-club"):
        bucket.blob(f"{prefix}/uploads/{community}/data.jsonl").upload_from_string("".join(json.dumps(r) + "\n" for r in rows))
    return gcs_uri, rows


def test_a_dataset_in_the_communitys_area_is_fetched(uploads, monkeypatch):
    gcs_uri, rows = uploads
    _trigger(monkeypatch, f"{gcs_uri}/uploads/tofu-club/data.jsonl")
    run = tasks.prepare_custom_run()
    assert [json.loads(ln) for ln in open(f"{run['run_dir']}/dpo.jsonl")] == rows


def test_another_communitys_upload_is_refused_before_anything_is_fetched(uploads, monkeypatch, tmp_path):
    gcs_uri, _ = uploads
    _trigger(monkeypatch, f"{gcs_uri}/uploads/other-club/data.jsonl")
    with pytest.raises(AirflowFailException, match="must lie under .*/uploads/tofu-club/"):
        tasks.prepare_custom_run()
    assert not (tmp_path / "runs").exists()
