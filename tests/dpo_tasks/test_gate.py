import json

import pytest

from dpo_tasks import cli, gate
from dpo_tasks.config import ConfigError, load_persona, with_overrides
from dpo_tasks.runs import RunDir, write_json
from dpo_tasks.stats import win_rate

PERSONA = "persona_e_mexican_vegan"


def _write_eval(run_dir, outcomes):
    stats = win_rate(outcomes).as_dict() | {"judge": "checklist", "baseline": {"kind": "base"}}
    write_json(RunDir(run_dir).eval / "summary_stats.json", stats)
    return stats


@pytest.mark.parametrize(
    ("outcomes", "threshold", "decision"),
    [
        pytest.param(["win"] * 18 + ["loss"] * 2, 0.5, "promote", id="clear-win"),
        pytest.param(["win"] * 12 + ["loss"] * 8, 0.5, "reject", id="point-estimate-above-but-ci-below"),
        pytest.param(["tie"] * 20, 0.5, "reject", id="all-ties"),
        pytest.param(["win"] * 12 + ["loss"] * 8, 0.3, "promote", id="lower-threshold"),
        pytest.param(["loss"] * 20, 0.0, "promote", id="threshold-zero-accepts-anything"),
    ],
)
def test_gate_decision(tmp_path, outcomes, threshold, decision):
    persona = with_overrides(load_persona(PERSONA), {"gate": {"min_win_rate_lower_bound": threshold}})
    stats = _write_eval(tmp_path, outcomes)
    result = gate.run(persona, tmp_path)
    on_disk = json.loads((tmp_path / "gate.json").read_text())
    assert on_disk["decision"] == result["decision"] == decision
    assert on_disk["threshold"] == threshold
    assert on_disk["ci_low"] == stats["ci_low"] and on_disk["n"] == 20
    assert f"{threshold:.3f}" in on_disk["reason"]


def test_gate_at_the_boundary_promotes(tmp_path):
    stats = _write_eval(tmp_path, ["win"] * 18 + ["loss"] * 2)
    persona = with_overrides(load_persona(PERSONA), {"gate": {"min_win_rate_lower_bound": stats["ci_low"]}})
    assert gate.run(persona, tmp_path)["decision"] == "promote"
    just_above = with_overrides(load_persona(PERSONA), {"gate": {"min_win_rate_lower_bound": stats["ci_low"] + 1e-6}})
    assert gate.run(just_above, tmp_path)["decision"] == "reject"


def test_gate_rejects_when_nothing_was_judged(tmp_path):
    _write_eval(tmp_path, [])
    result = gate.run(load_persona(PERSONA), tmp_path)
    assert result["decision"] == "reject" and "n=0" in result["reason"]


def test_gate_without_evaluation_says_what_to_run(tmp_path):
    with pytest.raises(ConfigError, match="evaluate"):
        gate.run(load_persona(PERSONA), tmp_path)


@pytest.mark.parametrize(
    ("extra", "decision"),
    [pytest.param([], "reject", id="default-threshold"), pytest.param(["--set", "gate.min_win_rate_lower_bound=0.3"], "promote", id="set-override")],
)
def test_gate_cli_exits_zero_both_ways(tmp_path, capsys, extra, decision):
    _write_eval(tmp_path, ["win"] * 12 + ["loss"] * 8)
    rc = cli.main(["gate", "--persona", PERSONA, "--run-dir", str(tmp_path), *extra])
    assert rc == 0
    assert json.loads((tmp_path / "gate.json").read_text())["decision"] == decision
    assert f"gate: {decision}" in capsys.readouterr().out


def _write_stats(run_dir, stats):
    write_json(RunDir(run_dir).eval / "summary_stats.json", stats)


@pytest.mark.parametrize(
    ("eval_judge", "label_judge", "allow", "decision"),
    [
        pytest.param("rules", "rules", False, "reject", id="same-judge-refused"),
        pytest.param("rules", "rules", True, "promote", id="same-judge-allowed-by-config"),
        pytest.param("checklist", "rules", False, "promote", id="independent-judge"),
        pytest.param("gemini", "groq", False, "promote", id="api-judges"),
    ],
)
def test_gate_refuses_the_labeling_judge_as_evaluator(tmp_path, eval_judge, label_judge, allow, decision):
    stats = win_rate(["win"] * 18 + ["loss"] * 2).as_dict() | {"judge": eval_judge, "eval_judge": eval_judge, "label_judge": label_judge}
    _write_stats(tmp_path, stats)
    persona = with_overrides(load_persona(PERSONA), {"gate": {"allow_same_judge": allow}})
    result = gate.run(persona, tmp_path)
    assert result["decision"] == decision
    assert result["same_judge"] is (eval_judge == label_judge)
    if decision == "reject":
        assert "also labeled" in result["reason"] and "allow_same_judge" in result["reason"]


def test_gate_reads_the_labeling_judge_from_the_label_stage(tmp_path):
    """An old summary without label_judge: the label stage's record decides, here the same rule judge."""
    _write_stats(tmp_path, win_rate(["win"] * 20).as_dict() | {"judge": "rules"})
    write_json(RunDir(tmp_path).stage_summary("label"), {"judge": "rules"})
    assert gate.run(load_persona(PERSONA), tmp_path)["decision"] == "reject"
    write_json(RunDir(tmp_path).stage_summary("label"), {"judge": "groq"})
    assert gate.run(load_persona(PERSONA), tmp_path)["decision"] == "promote"


@pytest.mark.parametrize(
    ("wins", "failed", "overrides", "decision", "why"),
    [
        pytest.param(4, 16, {}, "reject", "4 of 20 cases were judged", id="four-of-four-judged-does-not-promote"),
        pytest.param(18, 2, {}, "promote", None, id="ninety-percent-judged-is-enough"),
        pytest.param(17, 3, {}, "reject", "17 of 20", id="under-ninety-percent"),
        pytest.param(17, 3, {"min_judged_fraction": 0.8, "min_judged": 10}, "promote", None, id="fraction-configurable"),
        pytest.param(14, 0, {}, "reject", "gate.min_judged 15", id="under-the-minimum-count"),
        pytest.param(14, 0, {"min_judged": 14}, "promote", None, id="minimum-configurable"),
    ],
)
def test_gate_counts_what_it_did_not_see(tmp_path, wins, failed, overrides, decision, why):
    failed_ids = [f"case-{i}" for i in range(failed)]
    stats = win_rate(["win"] * wins).as_dict() | {"judge": "checklist", "failed": failed, "failed_cases": failed_ids}
    _write_stats(tmp_path, stats)
    persona = with_overrides(load_persona(PERSONA), {"gate": overrides})
    result = gate.run(persona, tmp_path)
    assert result["decision"] == decision, result["reason"]
    assert result["failed"] == failed and result["failed_cases"] == failed_ids
    assert result["judged_fraction"] == pytest.approx(wins / (wins + failed))
    if why:
        assert why in result["reason"]


def test_samples_of_a_case_are_not_more_cases(tmp_path):
    # 10 cases answered 4 times, 7 won every time: 28 of 40 pairs. Treated as 40 independent cases the
    # interval would clear 0.5; clustered by case it does not, and 10 cases are under gate.min_judged.
    from dpo_tasks.stats import clustered_win_rate

    by_case = {f"c{i}": ["win"] * 4 if i < 7 else ["loss"] * 4 for i in range(10)}
    wr = clustered_win_rate(by_case)
    stats = wr.as_dict() | {"judge": "checklist", "samples_per_case": 4, "cases_judged": wr.clusters}
    _write_stats(tmp_path, stats)
    lenient = with_overrides(load_persona(PERSONA), {"gate": {"min_judged": 10}})
    result = gate.run(lenient, tmp_path)
    assert result["decision"] == "reject" and result["ci_low"] < 0.5 < win_rate(["win"] * 28 + ["loss"] * 12).ci_low
    assert "answer pairs (4 per case)" in result["reason"] and result["effective_n"] <= 10
    strict = gate.run(load_persona(PERSONA), tmp_path)
    assert strict["decision"] == "reject" and "only 10 cases were judged" in strict["reason"]
    assert "not independent" in strict["reason"] and strict["cases_judged"] == 10 and strict["n"] == 40


def test_gate_refuses_a_summary_with_a_bad_case_count(tmp_path):
    _write_stats(tmp_path, win_rate(["win"] * 20).as_dict() | {"judge": "checklist", "cases_judged": -3})
    with pytest.raises(ConfigError, match="'cases_judged'.*-3"):
        gate.run(load_persona(PERSONA), tmp_path)
