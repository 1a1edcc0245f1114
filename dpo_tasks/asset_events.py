"""Asset events for moves of LATEST that happen outside an Airflow task (a CLI rollback or publish).

Inside a task, the `publish` task's outlet makes Airflow record the event
(`dpo_tasks/orchestration/assets.py`). A `python -m dpo_tasks rollback` on someone's laptop has no
task: when the deployment says where its Airflow API server is, the event is recorded through the
REST API v2 (`POST /api/v2/assets/events`), so deployment DAGs scheduled on the model's asset run
for rollbacks too. Without that configuration nothing is sent, and the log says so.

    PERSONA_DPO_AIRFLOW_API       base URL of the API server, e.g. https://airflow.example.com
    PERSONA_DPO_AIRFLOW_TOKEN     a JWT; or PERSONA_DPO_AIRFLOW_USER + PERSONA_DPO_AIRFLOW_PASSWORD
                                  (exchanged at POST /auth/token, the simple auth manager's flow)

Light on purpose (urllib only): the store's promotion hook calls it, and no Airflow is needed.
A failure is logged, never raised: LATEST has already moved, and that is what serving reads.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
import urllib.request
from typing import Any

log = logging.getLogger(__name__)

ASSET_GROUP = "persona-dpo-model"
TIMEOUT_S = 10


def asset_name(namespace: str) -> str:
    return f"{ASSET_GROUP}:{namespace}"


def _call(base: str, method: str, path: str, body: dict[str, Any] | None, token: str | None) -> Any:
    req = urllib.request.Request(base.rstrip("/") + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
        return json.loads(resp.read() or b"{}")


def _token(base: str) -> str | None:
    if token := os.environ.get("PERSONA_DPO_AIRFLOW_TOKEN"):
        return token
    user, password = os.environ.get("PERSONA_DPO_AIRFLOW_USER"), os.environ.get("PERSONA_DPO_AIRFLOW_PASSWORD")
    if user and password:
        return _call(base, "POST", "/auth/token", {"username": user, "password": password}, None)["access_token"]
    return None


def notify(namespace: str, record: dict[str, Any]) -> bool:
    """Record an asset event for `namespace`'s model after LATEST moved outside a task; True if one was recorded."""
    if os.environ.get("AIRFLOW_CTX_DAG_RUN_ID"):
        return False  # inside a task: the task's outlet records it
    base = os.environ.get("PERSONA_DPO_AIRFLOW_API")
    if not base:
        log.info(
            "no Airflow asset event for %s -> %s (%s outside Airflow; set PERSONA_DPO_AIRFLOW_API to record one)",
            namespace, record.get("version"), record.get("action"),
        )
        return False
    name = asset_name(namespace)
    try:
        token = _token(base)
        found = _call(base, "GET", "/api/v2/assets?" + urllib.parse.urlencode({"name_pattern": name, "limit": 100}), None, token)
        ids = [a["id"] for a in found.get("assets", []) if a.get("name") == name]
        if not ids:
            log.warning("Airflow at %s has no asset %r (no DAG declares it); no event recorded", base, name)
            return False
        extra = {k: record.get(k) for k in ("version", "previous", "action", "forced", "reason")} | {"namespace": namespace}
        _call(base, "POST", "/api/v2/assets/events", {"asset_id": ids[0], "extra": extra}, token)
    except Exception as exc:
        log.warning("could not record the asset event for %s -> %s at %s: %s", namespace, record.get("version"), base, exc)
        return False
    log.info("recorded an Airflow asset event for %s (%s -> %s)", name, record.get("previous"), record.get("version"))
    return True
