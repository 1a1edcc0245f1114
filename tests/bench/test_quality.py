"""bench/quality.py: the demo's settings come from the Makefile, the table and JSON come from the runs' summaries."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import quality  # noqa: E402


def test_demo_settings_are_the_makefiles():
    sets = quality.demo_settings()
    assert sets[0] == "--set" and len(sets) % 2 == 0
    pairs = dict(a.split("=", 1) for a in sets[1::2])
    assert pairs["generation.num_prompts"] == "64" and pairs["generation.max_new_tokens"] == "160" and pairs["evaluation.max_new_tokens"] == "96"


def test_extra_sets_replace_the_demos_own():
    merged = quality.merge_sets(["--set", "generation.num_prompts=32", "--set", "training.epochs=2"], ["generation.num_prompts=4"])
    assert merged == ["--set", "generation.num_prompts=4", "--set", "training.epochs=2"]


def test_row_and_table_from_summaries(tmp_path):
    run = tmp_path / "persona_x"
    (run / "summaries").mkdir(parents=True)
    (run / "eval").mkdir()
    (run / "summaries" / "label.json").write_text(json.dumps({"judge": "rules", "kept": 20, "input_pairs": 32, "dropped": {"chosen_cut_off": 5}}))
    (run / "eval" / "summary_stats.json").write_text(json.dumps({
        "n": 60, "failed": 0, "win_rate": 0.65, "ci_low": 0.52, "ci_high": 0.76, "eval_judge": "checklist", "label_judge": "rules",
        "usable_rate": {"candidate": 0.55, "baseline": 0.3}, "truncation_rate": {"candidate": 0.1, "baseline": 0.2},
        "second_opinion": {"judge": "rules", "win_rate": 0.7, "agreement": 0.8},
    }))
    row = quality.row_for("persona_x", run, 12.3)
    assert {k: row[k] for k in quality.JSON_FIELDS} == {
        "persona": "persona_x", "win_rate": 0.65, "ci_low": 0.52, "ci_high": 0.76, "usable_rate_base": 0.3,
        "usable_rate_dpo": 0.55, "eval_judge": "checklist", "label_judge": "rules",
    }
    assert (row["pairs_kept"], row["chosen_cut_off_dropped"], row["rules_win_rate"], row["agreement"]) == (20, 5, 0.7, 0.8)
    missing = quality.row_for("persona_y", tmp_path / "nothing")
    text = quality.table([row, missing])
    assert "20/32" in text and "0.650 [0.520-0.760]" in text and "0.30/0.55" in text and "checklist / rules" in text
    assert "persona_y" in text and "n/a" in text and "lower bound above 0.5 for 1 of 2 personas" in text
