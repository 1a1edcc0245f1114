"""MLflow tracking and registry against a real `mlflow server` on loopback.

The server is fronted by a small HTTP proxy of ours that can answer 503 for every request, the
way a load balancer does while the server behind it is down: the tests see MLflow go down and
come back without restarting it (a restart costs ~30 s on a loaded machine).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dpo_tasks import cli, publish, tracking
from dpo_tasks.config import load_persona
from dpo_tasks.runs import RunDir, write_json
from dpo_tasks.store.local import LocalStore

sys.path.insert(0, str(Path(__file__).parent))
from test_publish import PERSONA, make_run  # noqa: E402

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """Forwards HTTP to the MLflow server; `down = True` answers 503 instead."""

    def __init__(self, upstream_port: int):
        self.down = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    cmd = [
        MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
    ]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield Proxy(port)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def tracked(mlflow_server, monkeypatch):
    monkeypatch.setenv("PERSONA_DPO_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    mlflow_server.down = False
    yield mlflow_server
    mlflow_server.down = False


def finished_run(root: Path, *, weights: bytes = b"\x00" * 64) -> RunDir:
    """A run dir as the stages leave it: summaries, training steps, evaluation by category, gate."""
    rd = make_run(root, weights=weights)
    steps = [{"step": i, "loss": 0.69 - 0.1 * i, "rewards/accuracies": 0.5 + 0.1 * i, "rewards/margins": 0.01 * i} for i in (1, 2, 3)]
    write_json(rd.train / "metrics.json", {"steps": steps, "summary": {}})
    write_json(rd.stage_summary("train"), {"stage": "train", "pairs": 8, "steps": 3, "train_loss": 0.55, "device": "cpu"})
    write_json(rd.eval / "summary_stats.json", {
        "judge": "checklist", "n": 20, "win_rate": 0.8, "ci_low": 0.58, "ci_high": 0.92, "wins": 16, "ties": 0, "losses": 4,
        "per_category": {"basic_alignment": {"win_rate": 0.9, "n": 10}, "edge_case": {"win_rate": 0.7, "n": 10}},
    })
    write_json(rd.stage_summary("evaluate"), {"win_rate": 0.8})
    write_json(rd.stage_summary("gate"), {"decision": "promote"})
    return rd


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.mark.slow
def test_a_run_is_one_mlflow_run_and_champion_follows_latest(tracked, tmp_path, monkeypatch, capsys):
    persona = load_persona(PERSONA)
    store_uri = str(tmp_path / "store")
    rd = finished_run(tmp_path / "run-1")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", f"dpo_{PERSONA}")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__2026-12-03")
    tracker = tracking.RunTracker(rd, persona=persona, tags={"community": "vegan-bakers"})
    for stage in ("train", "evaluate", "gate"):
        assert tracker.log_stage(stage)
    first = publish.run(persona, rd, store_uri=store_uri)
    info = tracker.finish()
    assert info == {"tracking_uri": tracked.uri, "run_id": tracker.run_id, "pending": []}

    c = client(tracked.uri)
    run = c.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["training.learning_rate"] == str(persona.config.training.learning_rate)
    assert run.data.params["gate.min_win_rate_lower_bound"] == str(persona.config.gate.min_win_rate_lower_bound)
    assert [(m.step, round(m.value, 4)) for m in c.get_metric_history(tracker.run_id, "loss")] == [(1, 0.59), (2, 0.49), (3, 0.39)]
    assert run.data.metrics["eval/win_rate"] == 0.8 and run.data.metrics["eval/ci_low"] == 0.58
    assert run.data.metrics["eval/category/edge_case/win_rate"] == 0.7
    assert run.data.metrics["train/train_loss"] == 0.55
    tags = run.data.tags
    assert tags["persona"] == PERSONA and tags["community"] == "vegan-bakers" and tags["gate_decision"] == "promote"
    assert tags["dag_id"] == f"dpo_{PERSONA}" and tags["airflow_run_id"] == "manual__2026-12-03"
    assert tags["published_version"] == first["version"]
    artifacts = {a.path for a in c.list_artifacts(tracker.run_id)} | {a.path for a in c.list_artifacts(tracker.run_id, "eval")}
    artifacts |= {a.path for a in c.list_artifacts(tracker.run_id, "model")}
    assert {"gate.json", "eval/evaluation_report.html", "model/model_card.json", "model/adapter"} <= artifacts

    name = tracking.registered_model_name(PERSONA)
    champion = c.get_model_version_by_alias(name, "champion")
    assert champion.tags["store_version"] == first["version"] and champion.run_id == tracker.run_id

    # A second publish takes the alias; a rollback (CLI) gives it back.
    rd2 = finished_run(tmp_path / "run-2", weights=b"\x01" * 64)
    second = publish.run(persona, rd2, store_uri=store_uri)
    assert c.get_model_version_by_alias(name, "champion").tags["store_version"] == second["version"]
    assert cli.main(["rollback", "--persona", PERSONA, "--store", store_uri]) == 0
    assert LocalStore(store_uri).latest(PERSONA) == first["version"]
    assert c.get_model_version_by_alias(name, "champion").tags["store_version"] == first["version"]


@pytest.mark.slow
def test_mlflow_down_never_fails_the_run_and_is_retried_at_the_end(tracked, tmp_path, monkeypatch):
    persona = load_persona(PERSONA)
    store_uri = str(tmp_path / "store")
    rd = finished_run(tmp_path / "run-down")
    tracker = tracking.RunTracker(rd, persona=persona, namespace="policies/down-test")
    tracked.down = True
    assert tracker.log_stage("train") is False
    result = publish.run(persona, rd, store_uri=store_uri, namespace="policies/down-test")
    # The artifact store is the source of truth: the version is served although MLflow was down.
    assert LocalStore(store_uri).latest("policies/down-test") == result["version"]
    state = json.loads((rd.root / "mlflow.json").read_text())
    assert state["pending"] == ["train", "publish"] and state["run_id"] is None

    # Back at the end of the run: finish() logs what was missed, registers and sets the alias.
    tracked.down = False
    info = tracker.finish()
    assert info["pending"] == [] and info["run_id"]
    c = client(tracked.uri)
    run = c.get_run(info["run_id"])
    assert run.data.tags["published_version"] == result["version"] and "train/train_loss" in run.data.metrics
    champion = c.get_model_version_by_alias("persona-dpo-policies-down-test", "champion")
    assert champion.tags["store_version"] == result["version"]


@pytest.mark.slow
def test_still_down_at_the_end_is_reported_not_raised(tracked, tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "RETRY_DELAYS_S", (0.1,))
    rd = finished_run(tmp_path / "run")
    tracker = tracking.RunTracker(rd, persona=load_persona(PERSONA))
    tracked.down = True
    assert tracker.log_stage("gate") is False
    info = tracker.finish()
    assert info["pending"] == ["gate"] and info["run_id"] is None


def test_embedded_default_is_a_local_store_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PERSONA_DPO_TRACKING", "on")
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    rd = finished_run(tmp_path / "run")
    tracker = tracking.RunTracker(rd, persona=load_persona(PERSONA))
    assert tracker.log_stage("evaluate")
    run = client(tracking.tracking_uri()).get_run(tracker.run_id)
    assert run.data.metrics["eval/category/basic_alignment/win_rate"] == 0.9
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlruns").is_dir()


def test_the_printed_summary_ends_with_the_tracking_uri_and_run_id():
    from dpo_tasks.pipeline import format_summary

    summary = {
        "persona": PERSONA, "run_dir": "runs/demo", "total_seconds": 1.0, "stages": {"gate": {"decision": "reject", "reason": "r"}},
        "tracking": {"tracking_uri": "sqlite:///x/mlflow.db", "run_id": "abc123", "pending": []},
    }
    assert format_summary(summary).splitlines()[-1] == "  tracking: sqlite:///x/mlflow.db run abc123"


@pytest.mark.slow
def test_a_pipeline_run_lands_in_the_embedded_mlflow_store(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """`run` end to end on the tiny model with the embedded default: the store `mlflow ui` would show."""
    from test_pipeline import seed_feedback, tiny_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PERSONA_DPO_TRACKING", "on")
    rd = RunDir(tmp_path / "run").ensure()
    seed_feedback(rd)
    argv = ["run", "--persona", PERSONA, "--run-dir", str(rd.root), "--store", str(tmp_path / "store"), "--max-steps", "2"]
    for item in tiny_settings(tiny_model_dir, 0.0):
        argv += ["--set", item]
    assert cli.main(argv) == 0
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = json.loads((rd.root / "mlflow.json").read_text())["run_id"]
    assert last == f"  tracking: {uri} run {run_id}"

    c = client(uri)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["generation.num_prompts"] == "4"
    assert [m.step for m in c.get_metric_history(run_id, "loss")] == [1, 2]
    assert {"eval/win_rate", "generate/prompts", "label/kept", "format/records", "train/train_loss"} <= set(run.data.metrics)
    assert any(k.startswith("eval/category/") for k in run.data.metrics)
    assert "evaluation_report.html" in {a.path.split("/")[-1] for a in c.list_artifacts(run_id, "eval")}
    version = json.loads(rd.publish.read_text())["version"]
    assert run.data.tags["published_version"] == version and run.data.tags["gate_decision"] == "promote"
    assert c.get_model_version_by_alias(tracking.registered_model_name(PERSONA), "champion").tags["store_version"] == version
