"""The DPO microservice's HTTP API, served by Airflow's API server (plugin `plugins/persona_dpo_api.py`).

Clients of the reference microservice keep their calls; Airflow does the work and the auth:

    POST /persona-dpo/trigger-finetune   {"communityId": "...", "dataset": [{prompt, chosen, rejected}, ...]}
         -> 202 {"runId", "dagId": "dpo_custom", "namespace", "watch": {"api", "ui"}}
    GET  /persona-dpo/health             -> {"status": "healthy", ...}   (no auth, like /api/v2/monitor/health)
    GET  /persona-dpo/policies/{id}      -> the LATEST version of a community (or persona), its metrics, its files

The body is checked by the same function as `dpo_custom`'s `prepare` task
(`custom.check_custom_conf`): a refused body is a 400 naming the field, and no run is queued. The
trigger and policy endpoints sit behind Airflow's authentication (a JWT from `POST /auth/token`, or
the UI's session) and its authorization: triggering needs the right to create runs of `dpo_custom`,
reading a policy the right to read it.
"""


import json
import logging
from typing import Any

from fastapi import Body, Depends, FastAPI, HTTPException, status

from dpo_tasks.config import PERSONA_ID_RE, ConfigError
from dpo_tasks.orchestration.custom import COMMUNITY_ID_RE, check_custom_conf

log = logging.getLogger(__name__)

CUSTOM_DAG_ID = "dpo_custom"
URL_PREFIX = "/persona-dpo"
# What a request may carry: the reference body plus dpo_custom's own form fields.
BODY_KEYS = frozenset({"communityId", "dataset", "dataset_uri", "persona", "eval_judge", "epochs", "min_win_rate_lower_bound", "dry_run", "overrides"})


def _requires_dag_access(method: str) -> Any:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag(method, DagAccessEntity.RUN, param_dag_id=CUSTOM_DAG_ID))


def _namespace(policy_id: str) -> str:
    """A community id -> `policies/<id>`; a persona id -> itself. Anything else is refused (it becomes a path)."""
    if COMMUNITY_ID_RE.fullmatch(policy_id):
        return f"policies/{policy_id}"
    if PERSONA_ID_RE.fullmatch(policy_id):
        return policy_id
    raise HTTPException(status.HTTP_400_BAD_REQUEST, f"policy id {policy_id!r} is neither a community id nor a persona id")


def create_app() -> FastAPI:
    from airflow.api_fastapi.core_api.security import GetUserDep

    app = FastAPI(title="Persona DPO", description=__doc__.split("\n\n")[0])

    @app.get("/health")
    def health() -> dict[str, Any]:
        from dpo_tasks.config import load_personas_lenient

        personas = load_personas_lenient()
        return {"status": "healthy", "personas": len(personas.personas), "persona_errors": len(personas.errors)}

    @app.post("/trigger-finetune", status_code=status.HTTP_202_ACCEPTED, dependencies=[_requires_dag_access("POST")])
    def trigger_finetune(user: GetUserDep, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        from airflow.api.common.trigger_dag import trigger_dag
        from airflow.utils.types import DagRunTriggeredByType

        unknown = sorted(set(body) - BODY_KEYS)
        if unknown:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"unknown field(s) {unknown!r}; allowed: {sorted(BODY_KEYS)}")
        try:
            request = check_custom_conf(body)
        except ConfigError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        run = trigger_dag(
            CUSTOM_DAG_ID, conf=body, triggered_by=DagRunTriggeredByType.REST_API, triggering_user_name=user.get_name(),
        )
        if run is None:
            raise HTTPException(status.HTTP_409_CONFLICT, "no run was queued")
        log.info("trigger-finetune: %s queued %s for community %r", user.get_name(), run.run_id, request.community)
        return {
            "runId": run.run_id,
            "dagId": CUSTOM_DAG_ID,
            "communityId": request.community,
            "namespace": request.namespace,
            "state": str(run.state),
            "watch": {
                "api": f"/api/v2/dags/{CUSTOM_DAG_ID}/dagRuns/{run.run_id}",
                "ui": f"/dags/{CUSTOM_DAG_ID}/runs/{run.run_id}",
            },
        }

    @app.get("/policies/{policy_id}", dependencies=[_requires_dag_access("GET")])
    def policy(policy_id: str) -> dict[str, Any]:
        from dpo_tasks.store import StoreError, open_store

        namespace = _namespace(policy_id)
        store = open_store()
        try:
            version = store.latest(namespace)
            if version is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no published version of {namespace!r} in {store.uri}")
            evaluation = _json(store, namespace, version, "eval/summary.json")
            training = _json(store, namespace, version, "metrics.json").get("summary") or {}
            manifest = _json(store, namespace, version, "MANIFEST.json")
        except StoreError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"artifact store: {exc}") from None
        return {
            "id": policy_id,
            "namespace": namespace,
            "version": version,
            "uri": store.version_uri(namespace, version),
            "metrics": {
                "evaluation": {k: evaluation.get(k) for k in ("judge", "n", "win_rate", "ci_low", "ci_high", "wins", "ties", "losses")},
                "per_category": evaluation.get("per_category") or {},
                "training": {k: training.get(k) for k in ("pairs", "steps", "train_loss", "final_reward_accuracy", "final_reward_margin")},
            },
            "files": sorted(f["path"] for f in manifest.get("files", []) if isinstance(f, dict) and "path" in f),
        }

    return app


def _json(store: Any, namespace: str, version: str, rel: str) -> dict[str, Any]:
    from dpo_tasks.store import StoreError

    try:
        value = json.loads(store.read_file(namespace, version, rel))
    except (StoreError, FileNotFoundError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
