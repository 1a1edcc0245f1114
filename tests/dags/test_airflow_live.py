"""A real Airflow on loopback (api-server, scheduler, dag-processor, triggerer; LocalExecutor; the
metadata DB in a throwaway database on the local PostgreSQL): `dpo_custom` triggered through the
REST API v2 runs to success, and the UI's trigger form of a persona DAG shows its params and starts
a run in Debian's chromium (no browser download)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from dpo_tasks.config import default_personas_path, load_persona
from dpo_tasks.orchestration.common import POOLS
from dpo_tasks.validate import toy_records
from tests.dags.airflow_helpers import REPO, airflow_env

pytestmark = pytest.mark.slow

PG_ADMIN = os.environ.get("PERSONA_DPO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "admin", "persona-dpo-test"
PERSONA = "persona_b_indian_veg"
AIRFLOW = str(Path(sys.executable).parent / "airflow")
SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, base: str):
        self.base, self.token = base, None

    def call(self, method: str, path: str, body: dict | None = None, *, auth: bool = True) -> dict:
        req = urllib.request.Request(self.base + path, method=method, data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Content-Type", "application/json")
        if auth and self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def wait(self, what: str, check, timeout: float, every: float = 2.0):
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                if result := check():
                    return result
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last = exc
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r})")


def _tiny_personas(path: Path, model_dir: Path) -> Path:
    """The shipped personas with tiny-model defaults, so a run started from the UI stays cheap."""
    raw = yaml.safe_load(default_personas_path().read_text())
    d = raw["defaults"]
    # No schedules: an unpaused DAG would otherwise start its latest interval's run at once.
    d["schedule"] = None
    for persona in raw["personas"]:
        persona.get("overrides", {}).pop("schedule", None)
    d["model"]["base"] = str(model_dir)
    d["generation"].update(num_prompts=2, max_new_tokens=8)
    d["evaluation"]["max_new_tokens"] = 8
    d["training"].update(batch_size=2, grad_accum=1, epochs=1, max_length=128, max_prompt_length=96, lora_r=4, lora_alpha=8)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def live_airflow(tmp_path_factory, tiny_model_dir):
    from dpo_tasks.feedback.db import create_database, drop_database

    home = tmp_path_factory.mktemp("live_airflow")
    db_url = create_database(PG_ADMIN, prefix="test_airflow_meta")
    port = _free_port()
    (home / "passwords.json").write_text(json.dumps({USER: PASSWORD}))
    env = airflow_env(
        home,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET="persona-dpo-live-test-secret-0123456789",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        PERSONA_DPO_PERSONAS=str(_tiny_personas(home / "personas.yaml", tiny_model_dir)),
        # The repo's plugins: the microservice API (persona_dpo_api) is mounted in the API server.
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
    )
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    for name, (slots, description) in POOLS.items():
        subprocess.run([AIRFLOW, "pools", "set", name, str(slots), description], env=env, check=True, capture_output=True, timeout=120)
    procs = []
    try:
        for service in SERVICES:
            log = open(home / f"{service}.log", "w")
            procs.append(subprocess.Popen([AIRFLOW, service], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        api = Api(f"http://127.0.0.1:{port}")
        api.wait("the api-server", lambda: api.call("GET", "/api/v2/monitor/health", auth=False), timeout=240)
        api.token = api.call("POST", "/auth/token", {"username": USER, "password": PASSWORD}, auth=False)["access_token"]
        api.wait("the DAGs to be parsed", lambda: {"dpo_custom", f"dpo_{PERSONA}"} <= {
            d["dag_id"] for d in api.call("GET", "/api/v2/dags?limit=100")["dags"]}, timeout=300)
        yield api, home
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        drop_database(PG_ADMIN, db_url)


def _logs(home: Path) -> str:
    return "\n".join(f"== {s}\n{(home / f'{s}.log').read_text()[-3000:]}" for s in SERVICES)


def test_dpo_custom_through_rest_api_v2(live_airflow):
    api, home = live_airflow
    conf = {
        "communityId": "rest-community",
        "dataset": toy_records(load_persona(PERSONA), 6, seed=2),
        "min_win_rate_lower_bound": 0.0,
        "epochs": 1,
    }
    run = api.call("POST", "/api/v2/dags/dpo_custom/dagRuns", {"logical_date": None, "conf": conf})
    assert run["conf"]["communityId"] == "rest-community"

    def finished():
        state = api.call("GET", f"/api/v2/dags/dpo_custom/dagRuns/{run['dag_run_id']}")["state"]
        return state if state in ("success", "failed") else None

    try:
        state = api.wait("dpo_custom to finish", finished, timeout=900, every=5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_logs(home)}") from None
    tis = api.call("GET", f"/api/v2/dags/dpo_custom/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]
    states = {ti["task_id"]: ti["state"] for ti in tis}
    assert state == "success", (states, _logs(home))
    assert states["publish"] == "success" and states["train"] == "success"
    latest = home / "store" / "policies" / "rest-community" / "LATEST"
    assert latest.exists()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_trigger_form_in_the_ui_shows_the_persona_params_and_starts_a_run(live_airflow):
    from playwright.sync_api import expect, sync_playwright

    api, home = live_airflow
    dag_id = f"dpo_{PERSONA}"
    before = {r["dag_run_id"] for r in api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{api.base}/dags/{dag_id}")
        # The single-page app sends a signed-out browser to its login form.
        page.locator("input[name=username]").fill(USER)
        page.locator("input[name=password]").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"**/dags/{dag_id}**")
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text(f"Trigger Dag - {dag_id}")
        # The persona's params, starting from its config (the test's personas file: 2 prompts, 1 epoch).
        expect(dialog.get_by_role("spinbutton", name="Number of prompts")).to_have_value("2")
        expect(dialog.get_by_role("spinbutton", name="Training epochs")).to_have_value("1")
        expect(dialog.get_by_role("spinbutton", name="Gate: minimum win-rate lower bound")).to_have_value("0.5")
        for choice in ("Labeling judge", "Evaluation judge"):
            expect(dialog.get_by_role("combobox", name=choice)).to_be_attached()
        # Where training runs is the deployment's choice (personas.yaml), not the trigger's.
        expect(dialog.get_by_role("combobox", name="Training runner")).to_have_count(0)
        expect(dialog.get_by_role("checkbox", name="Dry run")).to_be_attached()
        dialog.get_by_role("button", name="Trigger").last.click()
        browser.close()

    def started():
        runs = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
        new = [r for r in runs if r["dag_run_id"] not in before]
        return new and new[0]["state"] in ("queued", "running", "success", "failed") and new[0]

    run = api.wait("the triggered run to appear", started, timeout=120)
    api.wait("its first task to start", lambda: any(
        ti["state"] not in (None, "scheduled", "queued") for ti in api.call(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]), timeout=180)
    # Nothing more to see: stop the run rather than train a persona in the background.
    api.call("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}", {"state": "failed"})


def _status(api: Api, method: str, path: str, body: dict | None = None, *, auth: bool = True) -> tuple[int, dict]:
    try:
        return 200, api.call(method, path, body, auth=auth)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_the_microservice_api_is_served_by_the_api_server_behind_its_auth(live_airflow, tmp_path):
    """The reference microservice's calls, on the plugin mounted at /persona-dpo (plugins/persona_dpo_api.py)."""
    from dpo_tasks import publish
    from tests.dpo_tasks.test_publish import make_run

    api, home = live_airflow
    assert api.call("GET", "/persona-dpo/health", auth=False)["status"] == "healthy"

    body = {"communityId": "plugin-bakers", "dataset": toy_records(load_persona(PERSONA), 4, seed=5)}
    assert _status(api, "POST", "/persona-dpo/trigger-finetune", body, auth=False)[0] == 401
    code, answer = _status(api, "POST", "/persona-dpo/trigger-finetune", {**body, "communityId": "Bad_Id"})
    assert code == 400 and "communityId" in answer["detail"], answer
    assert "'Bad_Id'" in answer["detail"]
    code, answer = _status(api, "POST", "/persona-dpo/trigger-finetune", {"communityId": "plugin-bakers"})
    assert code == 400 and "exactly one of 'dataset'" in answer["detail"]

    before = {r["dag_run_id"] for r in api.call("GET", "/api/v2/dags/dpo_custom/dagRuns?limit=100")["dag_runs"]}
    req = urllib.request.Request(api.base + "/persona-dpo/trigger-finetune", method="POST", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {api.token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 202
        queued = json.loads(resp.read())
    assert queued["dagId"] == "dpo_custom" and queued["namespace"] == "policies/plugin-bakers"
    assert queued["runId"] not in before
    run = api.call("GET", queued["watch"]["api"])
    assert run["dag_run_id"] == queued["runId"] and run["conf"]["communityId"] == "plugin-bakers"
    assert len(run["conf"]["dataset"]) == 4

    # A published community version, as the API server sees it in the deployment's store.
    assert _status(api, "GET", "/persona-dpo/policies/plugin-bakers")[0] == 404
    result = publish.run(load_persona(PERSONA), make_run(tmp_path / "run"), store_uri=str(home / "store"), namespace="policies/plugin-bakers")
    assert _status(api, "GET", "/persona-dpo/policies/plugin-bakers", auth=False)[0] == 401
    policy = api.call("GET", "/persona-dpo/policies/plugin-bakers")
    assert policy["version"] == result["version"] and policy["uri"] == result["uri"]
    assert policy["metrics"]["evaluation"]["win_rate"] == 0.8
    assert {"adapter/adapter_model.safetensors", "model_card.json", "eval/summary.json"} <= set(policy["files"])
    assert _status(api, "GET", "/persona-dpo/policies/..%2Fetc")[0] in (400, 404)


def test_a_cli_rollback_records_an_asset_event_through_the_rest_api(live_airflow, tmp_path, monkeypatch):
    """Outside any task, publish and rollback record the model's asset event via POST /api/v2/assets/events."""
    from dpo_tasks import cli, publish
    from tests.dpo_tasks.test_publish import make_run

    api, home = live_airflow
    monkeypatch.setenv("PERSONA_DPO_AIRFLOW_API", api.base)
    monkeypatch.setenv("PERSONA_DPO_AIRFLOW_USER", USER)
    monkeypatch.setenv("PERSONA_DPO_AIRFLOW_PASSWORD", PASSWORD)
    store = str(home / "store")
    # The persona DAG declares the asset (publish's outlet), so the API server knows it.
    [asset] = [a for a in api.call("GET", f"/api/v2/assets?name_pattern=persona-dpo-model:{PERSONA}")["assets"]
               if a["name"] == f"persona-dpo-model:{PERSONA}"]
    assert asset["uri"] == (home / "store" / PERSONA / "LATEST").as_uri()
    versions = [publish.run(load_persona(PERSONA), make_run(tmp_path / f"r{i}", weights=bytes([i]) * 16), store_uri=store)["version"]
                for i in range(2)]
    assert cli.main(["rollback", "--persona", PERSONA, "--store", store]) == 0

    events = api.call("GET", f"/api/v2/assets/events?asset_id={asset['id']}&limit=100")["asset_events"]
    moves = [(e["extra"].get("action"), e["extra"].get("version")) for e in events if e["extra"].get("from_rest_api")]
    assert moves[-3:] == [("publish", versions[0]), ("publish", versions[1]), ("rollback", versions[0])], moves
