"""The Helm deployment (docker/helm/): the values fit the official Airflow chart's schema, each secret
reaches only the components that use it, task logs go to the bucket, the hook Job that prepares the
databases really does, and the extra manifests are valid Kubernetes objects."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / "docker" / "helm"
VALUES = yaml.safe_load((HELM / "values.yaml").read_text())
MANIFESTS = [doc for path in sorted((HELM / "manifests").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
POOLS_IN_IMAGE = "/opt/persona-dpo/pools.json"


def _k8s(kind: str) -> dict[str, Any]:
    return {"type": "object", "x-k8s": kind}


def _obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": props, "additionalProperties": False, "required": list(required)}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


STR = {"type": "string"}
ANNOTATIONS = {"type": "object", "additionalProperties": STR}
SERVICE_ACCOUNT = _obj({"annotations": ANNOTATIONS})
ENV_VARS = _array(_k8s("V1EnvVar"))
RESOURCES = _k8s("V1ResourceRequirements")

# Every key values.yaml sets, with the type the official chart's values.schema.json (the chart for
# Airflow 3: apache/airflow chart/) gives it; `additionalProperties: false` at each level, as in the
# chart's schema, so a misspelt key fails here instead of being ignored by `helm install`. A key
# added to values.yaml must be looked up in the chart's schema and added here. Kubernetes objects
# inside the values (`x-k8s`) are checked against the Kubernetes client's models below.
CHART_SCHEMA = _obj({
    "images": _obj({"airflow": _obj({"repository": STR, "tag": STR, "pullPolicy": STR})}),
    "executor": {"enum": ["LocalExecutor", "CeleryExecutor", "KubernetesExecutor", "CeleryExecutor,KubernetesExecutor"]},
    "securityContexts": _obj({"pod": _k8s("V1PodSecurityContext"), "container": _k8s("V1SecurityContext")}),
    # airflow.cfg: section -> option -> a scalar (the chart's schema); the options are checked
    # against Airflow's own config below.
    "config": {"type": "object", "additionalProperties": {
        "type": "object", "additionalProperties": {"type": ["boolean", "integer", "number", "string"]}}},
    "migrateDatabaseJob": _obj({"args": _array(STR), "env": ENV_VARS, "resources": RESOURCES}),
    "workers": _obj({
        "resources": RESOURCES, "serviceAccount": SERVICE_ACCOUNT, "env": ENV_VARS,
        "extraVolumes": _array(_k8s("V1Volume")), "extraVolumeMounts": _array(_k8s("V1VolumeMount")),
    }),
    "triggerer": _obj({"replicas": {"type": "integer"}, "resources": RESOURCES, "serviceAccount": SERVICE_ACCOUNT, "env": ENV_VARS}),
    "apiServer": _obj({"serviceAccount": SERVICE_ACCOUNT}),
    "dagProcessor": _obj({"enabled": {"type": "boolean"}}),
    "postgresql": _obj({"enabled": {"type": "boolean"}}),
    "data": _obj({"metadataSecretName": {"type": ["string", "null"]}}),
    "env": _array(_obj({"name": STR, "value": STR}, ("name", "value"))),
    "secret": _array(_obj({"envName": STR, "secretName": STR, "secretKey": STR}, ("envName", "secretName", "secretKey"))),
})


def _k8s_objects(node: Any, schema: dict[str, Any], path: str = ""):
    """(path, model name, value) of every Kubernetes object the schema marks in `node`."""
    if "x-k8s" in schema:
        yield path, schema["x-k8s"], node
    elif schema.get("type") == "array":
        for i, item in enumerate(node):
            yield from _k8s_objects(item, schema["items"], f"{path}[{i}]")
    elif isinstance(schema.get("properties"), dict):
        for key, sub in schema["properties"].items():
            if key in node:
                yield from _k8s_objects(node[key], sub, f"{path}.{key}".lstrip("."))


def test_values_fit_the_chart_schema():
    jsonschema.Draft7Validator(CHART_SCHEMA).validate(VALUES)


def test_kubernetes_objects_in_the_values_have_no_unknown_field():
    from kubernetes.client import ApiClient

    api = ApiClient()
    found = list(_k8s_objects(VALUES, CHART_SCHEMA))
    assert len(found) >= 10
    for path, model, value in found:
        # The client's models drop fields they do not know: a round trip that loses one is a typo.
        round_trip = api.sanitize_for_serialization(api._ApiClient__deserialize(value, model))
        assert round_trip == value, f"values.yaml {path}: not a valid {model[2:]}: {value!r}"


def test_the_schema_rejects_what_the_chart_would_ignore():
    """The schema above must be able to fail: a misspelt key and a wrong type are caught."""
    for bad in ({**VALUES, "workers": {**VALUES["workers"], "extraEnv": []}},
                {**VALUES, "triggerer": {**VALUES["triggerer"], "replicas": "1"}},
                {**VALUES, "secret": [{"envName": "X", "secretName": "s"}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft7Validator(CHART_SCHEMA).validate(bad)


def _secret_keys(env: list[dict[str, Any]]) -> set[str]:
    return {e["valueFrom"]["secretKeyRef"]["key"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}


def test_each_credential_reaches_only_the_components_that_use_it():
    """The Groq key: only the workers (labeling). The feedback DB: the workers, the triggerer (the
    feedback sensor's trigger) and the hook Job that migrates its schema. The API server, the
    scheduler and the DAG processor get neither: they never run a task."""
    everywhere = {s["secretKey"] for s in VALUES["secret"]}
    assert everywhere == {"google_cloud_default"}, "only the keyless GCP connection goes to every component"
    assert not any("value" in e and re.search(r"(?i)password|gsk_|key", e["value"]) for e in VALUES["env"])

    per_component = {name: _secret_keys(VALUES.get(name, {}).get("env", []))
                     for name in ("workers", "triggerer", "migrateDatabaseJob", "apiServer", "scheduler", "dagProcessor")}
    assert per_component == {
        "workers": {"groq_default", "feedback_db"},
        "triggerer": {"feedback_db"},
        "migrateDatabaseJob": {"feedback_db"},
        "apiServer": set(), "scheduler": set(), "dagProcessor": set(),
    }
    # The names are the ones Airflow maps to the connections the code uses.
    for component in ("workers", "triggerer", "migrateDatabaseJob"):
        for e in VALUES[component]["env"]:
            key = e["valueFrom"]["secretKeyRef"]["key"]
            assert e["name"] == f"AIRFLOW_CONN_{key.upper()}"
            assert e["valueFrom"]["secretKeyRef"]["name"] == "persona-dpo-connections"


def test_task_logs_go_to_the_bucket_through_the_gcp_connection():
    from airflow.configuration import conf

    for section, options in VALUES["config"].items():
        for option in options:
            assert conf.has_option(section, option), f"values.yaml config.{section}.{option} is not an Airflow option"
    logging = VALUES["config"]["logging"]
    assert logging["remote_logging"] == "True"
    assert logging["remote_base_log_folder"].startswith("gs://")
    env = {e["name"]: e["value"] for e in VALUES["env"]}
    conns = {s["envName"] for s in VALUES["secret"]}
    assert logging["remote_log_conn_id"] == env["PERSONA_DPO_GCP_CONN_ID"]
    assert f"AIRFLOW_CONN_{logging['remote_log_conn_id'].upper()}" in conns, "the API server reads the logs too"
    # Logs and artifacts share the bucket, not a prefix.
    bucket = env["PERSONA_DPO_STORE"].split("/")[2]
    assert logging["remote_base_log_folder"].split("/")[2] == bucket
    assert not logging["remote_base_log_folder"].startswith(env["PERSONA_DPO_STORE"])


def test_workers_and_triggerer_have_resources():
    for component in ("workers", "triggerer", "migrateDatabaseJob"):
        resources = VALUES[component]["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), component
        assert "memory" in resources["limits"], component


def test_the_pool_file_the_hook_imports_is_in_the_airflow_image():
    dockerfile = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert re.search(rf"^COPY .*docker/helm/pools\.json {re.escape(POOLS_IN_IMAGE)}$", dockerfile, re.M)
    assert f"airflow pools import {POOLS_IN_IMAGE}" in VALUES["migrateDatabaseJob"]["args"][-1]


def _hook_script() -> str:
    args = VALUES["migrateDatabaseJob"]["args"]
    assert args[:2] == ["bash", "-c"] and len(args) == 3
    assert "{{" not in args[2], "the chart renders args with tpl: keep them free of template syntax"
    return args[2]


@pytest.mark.slow
def test_the_hook_job_migrates_airflow_creates_the_pools_and_the_feedback_schema(tmp_path):
    """Runs the hook Job's script as the image would, against a throwaway Airflow home (SQLite) and a
    throwaway feedback database on the local PostgreSQL; twice, as `helm upgrade` does."""
    from dpo_tasks.feedback.db import create_database, drop_database
    from dpo_tasks.orchestration.common import POOLS, POOLS_INCLUDE_DEFERRED

    admin = os.environ.get("PERSONA_DPO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    url = create_database(admin, prefix="test_helm_hook")
    try:
        bin_dir = Path(sys.executable).parent
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_FEEDBACK_DB": url,
        }
        script = _hook_script().replace(POOLS_IN_IMAGE, str(HELM / "pools.json"))
        for attempt in (1, 2):
            proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"attempt {attempt}: {proc.stderr[-3000:]}"

        export = tmp_path / "pools-out.json"
        subprocess.run([str(bin_dir / "airflow"), "pools", "export", str(export)], env=env, check=True,
                       capture_output=True, timeout=300)
        pools = json.loads(export.read_text())
        for name, (slots, description) in POOLS.items():
            assert pools[name]["slots"] == slots and pools[name]["description"] == description
            assert pools[name]["include_deferred"] is (name in POOLS_INCLUDE_DEFERRED)

        import psycopg2

        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('feedback'), to_regclass('feedback_watermarks')")
            assert all(cur.fetchone())
        conn.close()
    finally:
        drop_database(admin, url)


def test_values_wire_the_package():
    assert VALUES["images"]["airflow"]["repository"].endswith("/airflow")
    env = {e["name"]: e["value"] for e in VALUES["env"]}
    for name in env:
        assert name.startswith("PERSONA_DPO_")
        used = subprocess.run(["grep", "-rqF", name, str(REPO / "dpo_tasks")]).returncode == 0
        assert used, f"helm values set {name}, which nothing in dpo_tasks reads"
    assert env["PERSONA_DPO_STORE"].startswith("gs://") and env["PERSONA_DPO_DVC_REMOTE"].startswith("gs://")
    mounts = {m["mountPath"] for m in VALUES["workers"]["extraVolumeMounts"]}
    assert any(env["PERSONA_DPO_RUNS"].startswith(m + "/") for m in mounts), "run dirs must be on the shared volume"
    assert VALUES["postgresql"]["enabled"] is False and VALUES["executor"] == "KubernetesExecutor"


def test_extra_manifests_are_what_the_values_and_the_pods_expect():
    by_kind = {(m["kind"], m["metadata"]["name"]): m for m in MANIFESTS}
    claim = VALUES["workers"]["extraVolumes"][0]["persistentVolumeClaim"]["claimName"]
    pvc = by_kind[("PersistentVolumeClaim", claim)]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "every task pod of a run mounts the run directory"
    sa = by_kind[("ServiceAccount", "persona-dpo-trainer")]
    assert sa["automountServiceAccountToken"] is False
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    assert ("Namespace", sa["metadata"]["namespace"]) in by_kind
    for manifest in MANIFESTS:
        assert "{{" not in yaml.safe_dump(manifest), "plain manifests, applied with kubectl"


def test_extra_manifests_have_no_unknown_field():
    from kubernetes.client import ApiClient

    api = ApiClient()
    for manifest in MANIFESTS:
        model = f"V1{manifest['kind']}"
        assert manifest["apiVersion"] == "v1", manifest["kind"]
        round_trip = api.sanitize_for_serialization(api._ApiClient__deserialize(manifest, model))
        assert round_trip == manifest, f"{manifest['kind']} {manifest['metadata']['name']}: a field the API does not have"


@pytest.mark.parametrize("version", ["1.30.0", "1.33.0"])
def test_extra_manifests_are_valid_kubernetes(version):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="`make lint-k8s` validates them from its own environment")
    for manifest in MANIFESTS:
        kubernetes_validate.validate(manifest, version, strict=True)
