import json
from pathlib import Path

import pytest

from dpo_tasks import cli, evaluate, publish
from dpo_tasks.config import ConfigError, load_persona, with_overrides
from dpo_tasks.judges.base import Judge, OrderedVerdict, Scores
from dpo_tasks.runs import RunDir, read_jsonl, write_json

PERSONA = "persona_e_mexican_vegan"
STABLE_KEYS = {
    "judge", "n", "wins", "losses", "ties", "failed", "win_rate", "ci_low", "ci_high", "per_category",
    "criteria_means", "confidence", "baseline", "candidate", "disagreements", "sampling", "created", "report",
}
CATEGORY_SIZES = {"basic_alignment": 24, "constraint_stress": 18, "edge_case": 12, "cross_persona": 6}
N_CASES = sum(CATEGORY_SIZES.values())


def evaluate_cases():
    from dpo_tasks.prompts import load_eval_cases

    return load_eval_cases(PERSONA)


def make_adapter(base: Path, out: Path, seed: int = 1) -> Path:
    """A LoRA adapter with non-zero weights, so the candidate really differs from the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(out)
    return out


@pytest.fixture
def persona(tiny_model_dir):
    return with_overrides(load_persona(PERSONA), {
        "model": {"base": str(tiny_model_dir)},
        "evaluation": {"max_new_tokens": 8},
        "generation": {"batch_size": 10},
    })


@pytest.fixture
def run_dir(tmp_path, tiny_model_dir):
    rd = RunDir(tmp_path / "run").ensure()
    make_adapter(tiny_model_dir, rd.adapter)
    return rd


def test_evaluate_writes_every_output_with_stable_keys(persona, run_dir):
    summary = evaluate.run(persona, run_dir)
    on_disk = json.loads((run_dir.eval / "summary_stats.json").read_text())
    assert STABLE_KEYS <= set(on_disk)
    assert on_disk["judge"] == on_disk["eval_judge"] == "checklist" and on_disk["n"] == N_CASES and on_disk["failed"] == 0
    assert on_disk["label_judge"] == "rules" and on_disk["same_judge"] is False
    assert set(on_disk["usable_rate"]) == {"candidate", "baseline"}
    assert on_disk["second_opinion"]["judge"] == "rules" and 0 <= on_disk["second_opinion"]["agreement"] <= 1
    assert on_disk["checklists_written"] == sum("checklist" in c for c in evaluate_cases()) and on_disk["judged_fraction"] == 1.0
    assert on_disk["wins"] + on_disk["losses"] + on_disk["ties"] == N_CASES
    assert on_disk["win_rate"] == pytest.approx((on_disk["wins"] + 0.5 * on_disk["ties"]) / N_CASES)
    assert on_disk["ci_low"] <= on_disk["win_rate"] <= on_disk["ci_high"]
    assert {k: v["n"] for k, v in on_disk["per_category"].items()} == CATEGORY_SIZES
    assert set(on_disk["criteria_means"]["candidate"]) == {"persona_alignment", "constraint_compliance", "preferred_ingredients", "structure", "overall"}
    assert on_disk["baseline"]["kind"] == "base" and on_disk["candidate"]["adapter"] == str(run_dir.adapter)
    assert summary["win_rate"] == on_disk["win_rate"]
    details = json.loads((run_dir.eval / "detailed_results.json").read_text())
    assert len(details) == N_CASES
    assert all(d["candidate_response"] is not None and d["scores_candidate"] and d["scores_baseline"] for d in details)
    assert all(d["checks_candidate"]["total"] >= 6 and d["second_opinion_outcome"] in ("win", "loss", "tie") for d in details)
    assert {d["outcome"] for d in details} <= {"win", "loss", "tie"}
    html = (run_dir.eval / "evaluation_report.html").read_text()
    assert "<svg" in html and details[0]["id"] in html
    assert "evaluation judge <b>checklist</b>" in html and "labeling judge <b>rules</b>" in html and "usable answers" in html
    assert "is the labeling judge" not in html
    responses = read_jsonl(run_dir.eval / "responses.jsonl")
    assert len(responses) == 2 * N_CASES
    for role in ("candidate", "baseline"):
        flags = [r["cut_off"] for r in responses if r["role"] == role]
        assert on_disk["truncation_rate"][role] == pytest.approx(sum(flags) / N_CASES, abs=1e-4)
    # 8 new tokens from a random model: cut off, and the checklist judge knows it from the record.
    cut = [d for d in details if d["cut_off_candidate"]]
    assert cut and all(not d["checks_candidate"]["usable"] and "complete" in d["checks_candidate"]["failed"] for d in cut)


class AlwaysFirst(Judge):
    """Position bias in its purest form: whichever answer is shown first wins."""

    name = "always-first"

    def compare_once(self, persona, prompt, first, second):
        return OrderedVerdict("first", Scores(7, 7, 7, 7, 7), Scores(3, 3, 3, 3, 3))


class PrefersTexts(Judge):
    """Prefers answers from a fixed set, whatever the order: a consistent judge."""

    name = "prefers"

    def __init__(self, liked):
        self.liked = set(liked)

    def compare_once(self, persona, prompt, first, second):
        a, b = first in self.liked, second in self.liked
        if a == b:
            return OrderedVerdict("tie", Scores(5, 5, 5, 5, 5), Scores(5, 5, 5, 5, 5))
        hi, lo = Scores(9, 9, 9, 9, 9), Scores(2, 2, 2, 2, 2)
        return OrderedVerdict("first", hi, lo) if a else OrderedVerdict("second", lo, hi)


def test_a_judge_that_flips_with_order_gives_only_ties(persona, run_dir):
    summary = evaluate.run(persona, run_dir, judge=AlwaysFirst())
    assert (summary["wins"], summary["losses"], summary["ties"]) == (0, 0, N_CASES)
    assert summary["disagreements"] == N_CASES and summary["win_rate"] == 0.5
    assert summary["judge"] == "always-first"


def test_wins_count_only_when_both_orders_agree(persona, run_dir):
    evaluate.run(persona, run_dir)
    details = json.loads((run_dir.eval / "detailed_results.json").read_text())
    differ = sum(d["candidate_response"] != d["baseline_response"] for d in details)
    assert differ > 0, "the random adapter should change some answers"
    summary = evaluate.run(persona, run_dir, judge=PrefersTexts(d["candidate_response"] for d in details))
    assert summary["wins"] == differ and summary["losses"] == 0 and summary["ties"] == N_CASES - differ
    assert summary["criteria_means"]["candidate"]["overall"] > summary["criteria_means"]["baseline"]["overall"]


def test_rerun_reuses_answers_until_the_adapter_changes(persona, run_dir, tiny_model_dir, monkeypatch):
    first = evaluate.run(persona, run_dir)
    answers = read_jsonl(run_dir.eval / "responses.jsonl")

    def no_model(*a, **k):
        raise AssertionError("a rerun must not load a model for answers it already has")

    with monkeypatch.context() as m:
        m.setattr("dpo_tasks.models.load_policy", no_model)
        again = evaluate.run(persona, run_dir)
    assert again["win_rate"] == first["win_rate"] and read_jsonl(run_dir.eval / "responses.jsonl") == answers
    # Retrained weights: the candidate's answers are stale, the baseline's are not.
    import shutil

    shutil.rmtree(run_dir.adapter)
    make_adapter(tiny_model_dir, run_dir.adapter, seed=2)
    evaluate.run(persona, run_dir)
    roles = [r["role"] for r in read_jsonl(run_dir.eval / "responses.jsonl")]
    assert roles.count("candidate") == 2 * N_CASES and roles.count("baseline") == N_CASES


def test_baseline_latest_falls_back_to_base_when_nothing_is_published(persona, run_dir, tmp_path):
    summary = evaluate.run(persona, run_dir, baseline="latest", store_uri=str(tmp_path / "store"))
    assert summary["baseline"]["kind"] == "base" and summary["baseline"]["requested"] == "latest"
    assert "no version" in summary["baseline"]["note"]


def test_baseline_latest_uses_the_published_version(persona, run_dir, tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("PERSONA_DPO_CACHE", str(tmp_path / "cache"))
    champion = RunDir(tmp_path / "champion").ensure()
    make_adapter(tiny_model_dir, champion.adapter, seed=3)
    write_json(champion.gate, {"decision": "promote", "reason": "test"})
    version = publish.run(persona, champion, store_uri=str(tmp_path / "store"))["version"]
    summary = evaluate.run(persona, run_dir, baseline="latest", store_uri=str(tmp_path / "store"))
    assert summary["baseline"]["kind"] == "latest" and summary["baseline"]["version"] == version
    cached = tmp_path / "cache" / "store" / PERSONA / version / "adapter"
    assert summary["baseline"]["adapter"] == str(cached) and (cached / "adapter_config.json").is_file()


@pytest.mark.parametrize("bad", ["lastest", "/nonexistent/adapter"])
def test_bad_baseline_names_the_value(persona, run_dir, bad):
    with pytest.raises(ConfigError, match=repr(bad).replace("/", ".")):
        evaluate.run(persona, run_dir, baseline=bad)


def test_missing_candidate_says_to_train(persona, tmp_path):
    with pytest.raises(ConfigError, match="train"):
        evaluate.run(persona, tmp_path / "empty")


def test_cli_prints_the_win_rate(run_dir, tiny_model_dir, capsys):
    rc = cli.main(["evaluate", "--persona", PERSONA, "--run-dir", str(run_dir.root), "--set", f"model.base={tiny_model_dir}",
                   "--set", "evaluation.max_new_tokens=8"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "win rate" in out and "evaluation_report.html" in out


def test_the_labeling_judge_as_evaluator_is_said_plainly(persona, run_dir):
    same = with_overrides(persona, {"evaluation": {"judge": "rules"}})
    summary = evaluate.run(same, run_dir)
    assert summary["eval_judge"] == summary["label_judge"] == "rules" and summary["same_judge"] is True
    assert summary["second_opinion"] is None  # the rule judge is already the judge
    html = (run_dir.eval / "evaluation_report.html").read_text()
    assert "The evaluation judge is the labeling judge (rules)" in html and "allow_same_judge" in html
    from dpo_tasks import gate

    assert gate.run(same, run_dir)["decision"] == "reject"


class FailsSome(Judge):
    """Gives no verdict for the first `n_failed` pairs, as an API judge out of retries would."""

    name = "flaky"

    def __init__(self, n_failed):
        self.n_failed = n_failed

    def compare_once(self, persona, prompt, first, second):
        return OrderedVerdict("tie", Scores(5, 5, 5, 5, 5), Scores(5, 5, 5, 5, 5))

    def judge_pairs(self, persona, items, *, both_orders=True, progress=None):
        from dpo_tasks.judges.base import PairJudgement

        out = super().judge_pairs(persona, items, both_orders=both_orders)
        return [PairJudgement(j.id, "failed", None) if i < self.n_failed else j for i, j in enumerate(out)]


def test_failed_cases_show_in_the_summary_and_the_report(persona, run_dir):
    k = N_CASES // 10 + 1  # just over 10% failed: below the gate's default 90% judged
    summary = evaluate.run(persona, run_dir, judge=FailsSome(k))
    ids = [c["id"] for c in evaluate_cases()[:k]]
    assert summary["failed"] == k and summary["failed_cases"] == ids and summary["n"] == N_CASES - k
    assert summary["judged_fraction"] == pytest.approx((N_CASES - k) / N_CASES, abs=1e-4)
    html = (run_dir.eval / "evaluation_report.html").read_text()
    assert f"{k} of {N_CASES} cases were not judged" in html and all(i in html for i in ids)
    from dpo_tasks import gate

    result = gate.run(persona, run_dir)
    assert result["decision"] == "reject" and f"{N_CASES - k} of {N_CASES}" in result["reason"] and result["failed_cases"] == ids


def test_several_samples_per_case_are_judged_as_clustered_pairs(persona, run_dir, monkeypatch):
    from dpo_tasks.stats import clustered_win_rate

    evaluate.run(persona, run_dir)
    single = {d["id"]: d for d in json.loads((run_dir.eval / "detailed_results.json").read_text())}
    three = with_overrides(persona, {"evaluation": {"samples_per_case": 3}})
    summary = evaluate.run(three, run_dir)
    responses = read_jsonl(run_dir.eval / "responses.jsonl")
    # The first sample is the one-sample run's answer (reused, not generated again): 2 new per model and case.
    assert [r["role"] for r in responses].count("candidate") == 3 * N_CASES
    assert summary["n"] == 3 * N_CASES and summary["cases"] == summary["cases_judged"] == N_CASES
    assert summary["samples_per_case"] == 3 == summary["sampling"]["samples_per_case"]
    assert {k: v["n"] for k, v in summary["per_category"].items()} == {k: 3 * v for k, v in CATEGORY_SIZES.items()}
    details = json.loads((run_dir.eval / "detailed_results.json").read_text())
    cases = evaluate_cases()
    assert [d["id"] for d in details] == [f"{c['id']}#{j}" for c in cases for j in (1, 2, 3)]
    assert all(d["candidate_response"] == single[d["case_id"]]["candidate_response"] for d in details if d["sample"] == 1)
    by_case = {}
    for d in details:
        by_case.setdefault(d["case_id"], set()).add(d["candidate_response"])
    assert any(len(texts) > 1 for texts in by_case.values()), "each sample has its own seed"
    grouped = {}
    for d in details:
        grouped.setdefault(d["case_id"], []).append(d["outcome"])
    expected = clustered_win_rate(grouped)
    assert (summary["ci_low"], summary["ci_high"], summary["effective_n"]) == (expected.ci_low, expected.ci_high, expected.effective_n)
    assert summary["design_effect"] >= 1 and summary["effective_n"] <= summary["n"]
    html = (run_dir.eval / "evaluation_report.html").read_text()
    assert "3 answers per model and case" in html and "effective sample size" in html
    assert f"of {summary['second_opinion']['agreement_n']} answer pairs" in html

    def no_model(*a, **k):
        raise AssertionError("a rerun must not load a model for answers it already has")

    monkeypatch.setattr("dpo_tasks.models.load_policy", no_model)
    assert evaluate.run(three, run_dir)["win_rate"] == summary["win_rate"]
    from dpo_tasks import gate

    assert gate.run(three, run_dir)["cases_judged"] == N_CASES


def test_samples_per_case_needs_sampling(persona):
    with pytest.raises(ConfigError, match=r"evaluation.samples_per_case = 3 needs evaluation.temperature > 0"):
        with_overrides(persona, {"evaluation": {"samples_per_case": 3, "temperature": 0}})
