"""Asset events for moves of LATEST outside a task: never raised, sent only when configured and outside a task.
The REST call itself is tested on the live API server (tests/dags/test_airflow_live.py)."""

from __future__ import annotations

import socket

from dpo_tasks import asset_events

RECORD = {"version": "v2", "previous": "v1", "action": "rollback"}


def test_nothing_is_sent_without_an_api_or_inside_a_task(monkeypatch):
    monkeypatch.delenv("PERSONA_DPO_AIRFLOW_API", raising=False)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_RUN_ID", raising=False)
    assert asset_events.notify("persona_x", RECORD) is False
    # Inside a task the publish task's outlet records the event; a REST call would record it twice.
    monkeypatch.setenv("PERSONA_DPO_AIRFLOW_API", "http://127.0.0.1:9")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__1")
    assert asset_events.notify("persona_x", RECORD) is False


def test_an_unreachable_api_is_logged_not_raised(monkeypatch, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connection refused
    monkeypatch.delenv("AIRFLOW_CTX_DAG_RUN_ID", raising=False)
    monkeypatch.setenv("PERSONA_DPO_AIRFLOW_API", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("PERSONA_DPO_AIRFLOW_TOKEN", "t")
    assert asset_events.notify("persona_x", RECORD) is False
    assert "could not record the asset event for persona_x -> v2" in caplog.text
