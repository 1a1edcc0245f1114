from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dpo_tasks.config import load_persona
from dpo_tasks.feedback.export import build_signal, export, run
from dpo_tasks.runs import RunDir, read_json, read_jsonl

PERSONA = "persona_b_indian_veg"


def _r(fid, prompt, response, rating):
    return (fid, prompt, response, rating, "v1")


@pytest.mark.parametrize(
    "rows, pairs, prompts",
    [
        pytest.param(
            [_r(1, "Dal?", "good dal", "good"), _r(2, "dal? ", "meat dal", "bad")],
            [("good dal", "meat dal")], ["Dal?"], id="one-good-one-bad-same-prompt-modulo-case",
        ),
        pytest.param(
            [_r(1, "Dal?", "g1", "good"), _r(2, "Dal?", "g2", "good"), _r(3, "Dal?", "b1", "bad")],
            [("g1", "b1"), ("g2", "b1")], ["Dal?"], id="two-good-one-bad-every-response-used",
        ),
        pytest.param(
            [_r(1, "Dal?", "g1", "good"), _r(2, "Dal?", "b1", "bad"), _r(3, "Dal?", "b2", "bad"), _r(4, "Dal?", "b3", "bad")],
            [("g1", "b1"), ("g1", "b2"), ("g1", "b3")], ["Dal?"], id="one-good-three-bad",
        ),
        pytest.param(
            [_r(1, "Dal?", "g1", "good"), _r(2, "Curry?", "b1", "bad")],
            [], ["Curry?"], id="different-prompts-no-pair",
        ),
        pytest.param(
            [_r(1, "Dal?", "same", "good"), _r(2, "Dal?", "same", "bad"), _r(3, "Dal?", "other", "bad")],
            [], ["Dal?"], id="contradictory-response-left-out",
        ),
        pytest.param(
            [_r(1, "Dal?", "g1", "good"), _r(2, "Dal?", "g1", "good")],
            [], [], id="only-good",
        ),
    ],
)
def test_build_signal(rows, pairs, prompts):
    got_pairs, got_prompts, counts = build_signal(rows)
    assert [(p["chosen"], p["rejected"]) for p in got_pairs] == pairs
    assert [p["prompt"] for p in got_prompts] == prompts
    assert all(p["source"] == "feedback" for p in got_pairs + got_prompts)
    assert counts["pairs"] == len(pairs) and counts["feedback_rows"] == len(rows)


def test_build_signal_holds_out_prompts_close_to_an_evaluation_case():
    from dpo_tasks.feedback.export import eval_index
    from dpo_tasks.prompts import load_eval_cases

    case = load_eval_cases(PERSONA)[0]  # "A creamy palak paneer with fresh spinach for four."
    reworded = case["prompt"].lower().replace("four", "4").rstrip(".") + "??"
    rows = [
        _r(1, reworded, "good palak", "good"), _r(2, reworded, "palak with chicken", "bad"),
        _r(3, "Dal for a rainy day?", "good dal", "good"), _r(4, "Dal for a rainy day?", "meat dal", "bad"),
    ]
    pairs, prompts, counts = build_signal(rows, eval_index(PERSONA))
    assert [p["prompt"] for p in pairs] == ["Dal for a rainy day?"] and [p["prompt"] for p in prompts] == ["Dal for a rainy day?"]
    assert counts["held_out_prompts"] == 1 and counts["held_out_rows"] == 2 and counts["feedback_rows"] == 4
    # Without the index nothing is held out: the index, not the wording, decides.
    assert build_signal(rows)[2]["held_out_prompts"] == 0 and len(build_signal(rows)[0]) == 2


def _insert(db, rows):
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO feedback (persona_id, prompt, response, rating, comment) VALUES (%s, %s, %s, %s, %s)", rows
        )
    db.commit()


def test_export_writes_the_window_only(db, tmp_path):
    _insert(db, [
        (PERSONA, "old prompt", "old good", "good", None),                       # id 1, before the window
        (PERSONA, "Paneer curry?", "Paneer butter masala ...", "good", None),    # 2
        (PERSONA, "Paneer curry?", "Chicken curry ...", "bad", "has chicken"),   # 3
        ("persona_c_italian_gf", "Paneer curry?", "x", "bad", None),             # 4, another persona
        (PERSONA, "Lentil soup?", "Lentil soup with bacon", "bad", "'; DROP TABLE feedback; --"),  # 5
        # 6: an evaluation case asked through the app: its ratings must not become training data.
        (PERSONA, "Make me a butter chicken with naan for tonight!", "x", "bad", None),
        (PERSONA, "late", "after the window", "bad", None),                      # 7, after the window
    ])
    summary = export(db, PERSONA, str(tmp_path), from_id=1, to_id=6)
    rd = RunDir(tmp_path)
    pairs = read_jsonl(rd.feedback_pairs)
    prompts = read_jsonl(rd.feedback_prompts)
    assert pairs == [{
        "id": "fb-2-3", "prompt": "Paneer curry?", "chosen": "Paneer butter masala ...", "rejected": "Chicken curry ...",
        "source": "feedback", "feedback_ids": [2, 3], "model_versions": [None, None],
    }]
    assert prompts == [
        {"id": "fb-3", "prompt": "Paneer curry?", "source": "feedback"},
        {"id": "fb-5", "prompt": "Lentil soup?", "source": "feedback"},
    ]
    assert summary["feedback_rows"] == 4 and summary["pairs"] == 1 and summary["bad_prompts"] == 2
    assert summary["held_out_prompts"] == 1 and summary["held_out_rows"] == 1
    assert read_json(rd.stage_summary("feedback_export")) == summary


def test_run_without_a_window_exports_nothing(tmp_path):
    summary = run(load_persona(PERSONA), str(tmp_path), window=None)
    assert "skipped" in summary
    assert not RunDir(tmp_path).feedback_pairs.exists()


def test_run_refuses_another_personas_window(tmp_path, feedback_db_url):
    with pytest.raises(ValueError, match="persona_c_italian_gf"):
        run(load_persona(PERSONA), str(tmp_path), window={"persona_id": "persona_c_italian_gf", "from_id": 0, "to_id": 3}, db_url=feedback_db_url)


def test_cli_feedback_export(db, tmp_path, feedback_db_url):
    _insert(db, [(PERSONA, "Dal?", "Tadka dal", "good", None), (PERSONA, "Dal?", "Dal with ham", "bad", None)])
    env = {**os.environ, "FEEDBACK_DB_URL": feedback_db_url}
    result = subprocess.run(
        [sys.executable, "-m", "dpo_tasks", "feedback-export", "--persona", PERSONA, "--run-dir", str(tmp_path), "--from-id", "0", "--to-id", "2"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "1 feedback pairs, 1 feedback prompts" in result.stdout
    assert read_jsonl(RunDir(tmp_path).feedback_pairs)[0]["rejected"] == "Dal with ham"


def test_claimed_window_exports_through_the_airflow_connection(db, tmp_path, feedback_db_url, monkeypatch):
    """What a feedback-triggered persona run does: the monitor's conf in, files out, via PostgresHook."""
    from dpo_tasks.config import FeedbackConfig
    from dpo_tasks.feedback.rule import claim_crossing

    _insert(db, [(PERSONA, "Dal?", f"Tadka dal {i}", "good", None) for i in range(2)]
            + [(PERSONA, "Dal?", f"Dal with ham {i}", "bad", None) for i in range(3)])
    claim, _ = claim_crossing(db, PERSONA, FeedbackConfig(min_feedback=5, max_good_ratio=0.5, cooldown_hours=0), claim_key="m")
    monkeypatch.delenv("FEEDBACK_DB_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_FEEDBACK_DB", feedback_db_url)
    summary = run(load_persona(PERSONA), str(tmp_path), window=claim.conf()["feedback"])
    assert (summary["from_id"], summary["to_id"], summary["pairs"], summary["bad_prompts"]) == (0, 5, 3, 1)
    assert {p["rejected"] for p in read_jsonl(RunDir(tmp_path).feedback_pairs)} == {f"Dal with ham {i}" for i in range(3)}
