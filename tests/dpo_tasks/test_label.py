"""Stage `label`: which pairs are kept, which are dropped and why, feedback pairs, reruns."""

import json

import pytest

from dpo_tasks import label
from dpo_tasks.cli import main as cli
from dpo_tasks.config import load_persona, with_overrides
from dpo_tasks.judges.base import Judge, OrderedVerdict, PairJudgement
from dpo_tasks.runs import RunDir, read_json, read_jsonl, write_jsonl

VEGAN = load_persona("persona_e_mexican_vegan")

GOOD = """Smoky Black Bean Tacos

Ingredients:
- 1 can black beans
- 8 corn tortillas
- 1 avocado
- 1 lime

Instructions:
1. Warm the beans with cumin and chipotle.
2. Char the corn tortillas.
3. Fill with beans, avocado and cilantro, squeeze the lime over and serve.

A plant-based Mexican dinner, zesty and vegan, with no cheese needed."""
CHORIZO = GOOD.replace("1 can black beans", "200 g chorizo").replace("with no cheese needed", "topped with queso fresco")
UNNAMED = GOOD.replace("plant-based Mexican dinner", "plant-based dinner")  # cuisine not named: a small gap
TOASTED = GOOD.replace("Char the", "Toast the")  # scores exactly like GOOD

VARIANTS = [
    {"id": "p1", "prompt": "Tacos?", "variant_a": GOOD, "variant_b": CHORIZO},
    {"id": "p2", "prompt": "Tacos again?", "variant_a": CHORIZO, "variant_b": GOOD},
    {"id": "p3", "prompt": "Same twice", "variant_a": GOOD, "variant_b": GOOD + "\n"},
    {"id": "p4", "prompt": "Empty", "variant_a": GOOD, "variant_b": "   "},
    {"id": "p5", "prompt": "Close call", "variant_a": UNNAMED, "variant_b": GOOD},
    {"id": "p6", "prompt": "Broken row", "variant_a": GOOD},
    {"id": "p7", "prompt": "Even", "variant_a": TOASTED, "variant_b": GOOD},
]


def make_run_dir(tmp_path, variants=VARIANTS, feedback=None):
    run_dir = RunDir(tmp_path / "run").ensure()
    write_jsonl(run_dir.variants, [{**v, "system_strong": "s", "system_weak": "w"} for v in variants])
    if feedback is not None:
        write_jsonl(run_dir.feedback_pairs, feedback)
    return run_dir


def test_rule_judge_keeps_clear_winners_and_counts_every_drop(tmp_path):
    run_dir = make_run_dir(tmp_path)
    summary = label.run(VEGAN, run_dir)
    rows = read_jsonl(run_dir.labeled)
    assert [(r["id"], r["chosen_variant"]) for r in rows] == [("p1", "a"), ("p2", "b")]
    assert all(r["chosen"] == GOOD and r["rejected"] == CHORIZO and r["source"] == "generated" for r in rows)
    assert all(r["judge"] == "rules" and r["margin"] >= VEGAN.config.labeling.min_margin for r in rows)
    assert rows[0]["scores_chosen"]["constraint_compliance"] == 10 > rows[0]["scores_rejected"]["constraint_compliance"]
    assert summary["dropped"] == {"malformed": 1, "empty": 1, "identical": 1, "tie": 1, "disagree": 0,
                                  "under_margin": 1, "invalid": 0, "failed": 0, "chosen_cut_off": 0}
    assert summary["input_pairs"] == 7 and summary["judged"] == 4 and summary["kept"] == 2
    assert summary["pass_rate"] == pytest.approx(2 / 7, abs=1e-4)
    assert summary["chosen_variant"] == {"a": 1, "b": 1}
    assert read_json(run_dir.stage_summary("label")) == summary


def test_a_lower_margin_keeps_the_close_call(tmp_path):
    run_dir = make_run_dir(tmp_path)
    summary = label.run(with_overrides(VEGAN, {"labeling": {"min_margin": 0.0}}), run_dir)
    assert summary["kept"] == 3 and summary["dropped"]["under_margin"] == 0
    close = [r for r in read_jsonl(run_dir.labeled) if r["id"] == "p5"]
    assert close[0]["chosen"] == GOOD and close[0]["chosen_variant"] == "b" and 0 < close[0]["margin"] < 1


class FirstShownWins(Judge):
    """Position bias in its purest form: whatever is shown first wins."""

    name = "first-shown"

    def compare_once(self, persona, prompt, first, second):
        return OrderedVerdict(preferred="first")


class Unreliable(Judge):
    """An API judge's two failure kinds: unreadable answers and calls that never succeeded."""

    name = "unreliable"

    def compare_once(self, persona, prompt, first, second):
        raise AssertionError("judge_pairs is overridden")

    def judge_pairs(self, persona, items, *, both_orders=True, progress=None):
        return [PairJudgement(id=i.id, status="invalid" if n % 2 else "failed", winner=None) for n, i in enumerate(items)]

    def accounting(self):
        return {"calls_made": 4}


@pytest.mark.parametrize(
    ("judge", "dropped"),
    [
        pytest.param(FirstShownWins(), {"disagree": 4}, id="position-bias-is-a-disagreement"),
        pytest.param(Unreliable(), {"failed": 2, "invalid": 2}, id="invalid-and-failed"),
    ],
)
def test_unusable_verdicts_are_dropped_not_guessed(tmp_path, judge, dropped):
    run_dir = make_run_dir(tmp_path)
    summary = label.run(VEGAN, run_dir, judge=judge)
    assert read_jsonl(run_dir.labeled) == []
    assert summary["kept"] == 0 and summary["judge"] == judge.name
    assert {k: v for k, v in summary["dropped"].items() if k in dropped} == dropped
    assert summary["accounting"] == judge.accounting()


def test_feedback_pairs_are_validated_and_appended(tmp_path, caplog):
    feedback = [
        {"id": "fb1", "prompt": "Nachos?", "chosen": "Nachos with cashew crema.", "rejected": "Nachos with cheddar.", "source": "feedback"},
        {"id": "fb2", "prompt": "Nachos?", "chosen": "Same.", "rejected": "Same.", "source": "feedback"},
    ]
    run_dir = make_run_dir(tmp_path, feedback=feedback)
    summary = label.run(VEGAN, run_dir)
    rows = read_jsonl(run_dir.labeled)
    assert [(r["id"], r["source"]) for r in rows] == [("p1", "generated"), ("p2", "generated"), ("fb1", "feedback")]
    assert summary["feedback_pairs"] == 1 and summary["feedback_pairs_rejected"] == 1 and summary["total_pairs"] == 3
    assert "feedback_pairs.jsonl record 2: 'chosen' and 'rejected' are identical" in caplog.text


def test_rerun_rewrites_the_output_instead_of_appending(tmp_path):
    run_dir = make_run_dir(tmp_path)
    label.run(VEGAN, run_dir)
    first = run_dir.labeled.read_text()
    label.run(VEGAN, run_dir)
    assert run_dir.labeled.read_text() == first
    assert not list(run_dir.root.glob(".*.tmp"))


def test_cli_overrides_margin_and_reports_missing_input(tmp_path, capsys):
    run_dir = make_run_dir(tmp_path)
    assert cli(["label", "--persona", VEGAN.id, "--run-dir", str(run_dir.root), "--min-margin", "0"]) == 0
    assert json.loads(run_dir.stage_summary("label").read_text())["kept"] == 3
    assert cli(["label", "--persona", VEGAN.id, "--run-dir", str(tmp_path / "empty")]) == 2
    assert "variants.jsonl not found: run the generate stage first" in capsys.readouterr().err


def test_cli_rejects_an_unknown_judge(tmp_path, capsys):
    run_dir = make_run_dir(tmp_path)
    assert cli(["label", "--persona", VEGAN.id, "--run-dir", str(run_dir.root), "--judge", "oracle"]) == 2
    assert "'oracle'" in capsys.readouterr().err


def test_a_pair_whose_chosen_answer_was_cut_off_is_dropped(tmp_path):
    variants = [
        {"id": "p1", "prompt": "Tacos?", "variant_a": GOOD, "variant_b": CHORIZO, "variant_a_cut_off": True, "variant_b_cut_off": False},
        {"id": "p2", "prompt": "Tacos again?", "variant_a": GOOD, "variant_b": CHORIZO, "variant_a_cut_off": False, "variant_b_cut_off": True},
        {"id": "p3", "prompt": "Old record", "variant_a": GOOD, "variant_b": CHORIZO},
    ]
    run_dir = make_run_dir(tmp_path, variants)
    summary = label.run(VEGAN, run_dir)
    rows = read_jsonl(run_dir.labeled)
    assert [r["id"] for r in rows] == ["p2", "p3"]
    assert summary["dropped"]["chosen_cut_off"] == 1 and summary["kept"] == 2
    assert [(r["chosen_cut_off"], r["rejected_cut_off"]) for r in rows] == [(False, True), (False, False)]
    assert summary["rejected_cut_off"] == 1
