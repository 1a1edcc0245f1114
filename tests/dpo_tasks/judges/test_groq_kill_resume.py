"""Kill the CLI label stage (SIGKILL) half way through Groq labeling, rerun it, and pay for nothing twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpo_tasks.config import load_persona, with_overrides
from dpo_tasks.label import run as label_run
from dpo_tasks.runs import read_jsonl, write_jsonl
from fake_servers import FakeLLMServer, Reply, default_judge

REPO = Path(__file__).resolve().parents[3]
PERSONA_ID = "persona_e_mexican_vegan"
N_ITEMS = 30
KILL_AFTER = 24  # requests seen by the server (of 60)
SETTINGS = {"judge": "groq", "groq": {"max_concurrency": 2, "requests_per_minute": 60_000, "tokens_per_minute": 10_000_000,
                                       "hard_constraint_shortcut": False}}


def variants() -> list[dict]:
    rows = []
    for i in range(N_ITEMS):
        long = f"Recipe {i}: black bean tacos\nIngredients:\n- black beans\n- avocado\n- lime\nSteps:\n1. Warm.\n2. Serve." + " More." * (i % 4)
        short = f"Recipe {i}: beans on a tortilla."
        a, b = (long, short) if i % 3 else (short, long)
        rows.append({"id": f"v{i:02d}", "prompt": f"Request {i}: tacos?", "system_strong": "s", "system_weak": "w", "variant_a": a, "variant_b": b})
    return rows


def slow_judge(req, attempt):
    reply = default_judge(req)
    return Reply(text=reply.text, delay_s=0.05)


def label_cli(run_dir: Path, env: dict) -> subprocess.Popen:
    sets = [f"labeling.judge={SETTINGS['judge']}"] + [f"labeling.groq.{k}={v}" for k, v in SETTINGS["groq"].items()]
    cmd = [sys.executable, "-m", "dpo_tasks", "label", "--persona", PERSONA_ID, "--run-dir", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def item_and_order(req, rows_by_text) -> tuple[str, str]:
    first, second = req.responses()
    row = rows_by_text[(first, second)] if (first, second) in rows_by_text else rows_by_text[(second, first)]
    return row["id"], "ab" if first == row["variant_a"] else "ba"


@pytest.mark.slow
def test_sigkill_then_rerun_repeats_no_finished_request(tmp_path, monkeypatch):
    rows = variants()
    rows_by_text = {(r["variant_a"], r["variant_b"]): r for r in rows}
    run_dir, ref_dir = tmp_path / "run", tmp_path / "reference"
    write_jsonl(run_dir / "variants.jsonl", rows)
    write_jsonl(ref_dir / "variants.jsonl", rows)

    with FakeLLMServer("groq", slow_judge) as srv:
        env = {**os.environ, "GROQ_BASE_URL": srv.url, "GROQ_API_KEY": "gsk_test_key", "PYTHONPATH": str(REPO)}
        env.pop("AIRFLOW_CTX_DAG_ID", None)

        proc = label_cli(run_dir, env)
        deadline = time.monotonic() + 120
        while len(srv.requests) < KILL_AFTER:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the label stage never reached the server"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        killed_at = len(srv.requests)
        assert killed_at < 2 * N_ITEMS and not (run_dir / "labeled.jsonl").exists(), "the kill came too late to test anything"

        cache_files = list(run_dir.rglob("groq.jsonl"))
        assert len(cache_files) == 1
        finished = {(r["item_id"], r["order"]) for r in read_jsonl(cache_files[0], tolerate_torn_tail=True)}
        assert len(finished) >= KILL_AFTER - 2 * SETTINGS["groq"]["max_concurrency"]

        proc = label_cli(run_dir, env)
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out.decode()[-3000:]
        rerun = [item_and_order(r, rows_by_text) for r in srv.requests[killed_at:]]
        assert not set(rerun) & finished, "the rerun asked again for verdicts it already had"
        assert len(rerun) == 2 * N_ITEMS - len(finished)
        # Requests cut off by the kill are the only ones the server sees twice.
        assert sum(n > 1 for n in srv.attempts_by_prompt()) <= 2 * SETTINGS["groq"]["max_concurrency"]

        monkeypatch.setenv("GROQ_BASE_URL", srv.url)
        monkeypatch.setenv("GROQ_API_KEY", "gsk_test_key")
        persona = with_overrides(load_persona(PERSONA_ID), {"labeling": SETTINGS})
        label_run(persona, ref_dir)

    pairs = read_jsonl(run_dir / "labeled.jsonl")
    assert len(pairs) == N_ITEMS
    assert pairs == read_jsonl(ref_dir / "labeled.jsonl")
    acct = json.loads((run_dir / "summaries" / "label.json").read_text())["accounting"]
    assert acct["calls_saved_cache"] == len(finished) and acct["calls_made"] == 2 * N_ITEMS - len(finished)
