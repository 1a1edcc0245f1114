"""`report --all`: the cross-persona report from the runs' evaluation summaries."""

from __future__ import annotations

import json

import pytest

from dpo_tasks import cross_report
from dpo_tasks.cli import main
from dpo_tasks.stats import wilson_interval


def write_eval(run_dir, persona, wins, ties, losses, *, created, judge="checklist", per_category=None, gate=None, **extra):
    (run_dir / "eval").mkdir(parents=True)
    summary = {
        "persona": persona, "judge": judge, "eval_judge": judge, "label_judge": "rules", "same_judge": judge == "rules",
        "n": wins + ties + losses, "wins": wins, "ties": ties, "losses": losses, "failed": 0, "created": created,
        "per_category": per_category or {}, **extra,
    }
    (run_dir / "eval" / "summary_stats.json").write_text(json.dumps(summary))
    if gate:
        (run_dir / "gate.json").write_text(json.dumps({"decision": gate}))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    cat = lambda w, t, l: {"n": w + t + l, "wins": w, "ties": t, "losses": l}  # noqa: E731
    # An older run of persona a (a weaker model) and the latest one: only the latest counts.
    write_eval(root / "persona_a" / "scheduled__2026-11-23", "persona_a", 10, 10, 40, created="2026-11-23T03:00:00")
    write_eval(root / "persona_a" / "scheduled__2026-11-30", "persona_a", 40, 10, 10, created="2026-11-30T03:00:00",
               per_category={"basic_alignment": cat(20, 2, 2), "edge_case": cat(20, 8, 8)}, gate="promote",
               usable_rate={"candidate": 0.6, "baseline": 0.2})
    write_eval(root / "persona_b" / "manual__x", "persona_b", 20, 20, 20, created="2026-11-30T04:00:00",
               per_category={"basic_alignment": cat(10, 10, 4), "edge_case": cat(10, 10, 16)}, gate="reject")
    write_eval(root / "demo", "persona_<c>", 5, 10, 45, created="2026-11-30T05:00:00", per_category={"basic_alignment": cat(5, 10, 45)})
    (root / "broken" / "eval").mkdir(parents=True)
    (root / "broken" / "eval" / "summary_stats.json").write_text("{not json")
    (root / "other" / "eval").mkdir(parents=True)
    (root / "other" / "eval" / "summary_stats.json").write_text(json.dumps({"persona": "x"}))
    return root


def test_report_numbers(runs):
    report = cross_report.build(cross_report.find_evaluations(runs))
    by = {p["persona"]: p for p in report["personas"]}
    assert sorted(by) == ["persona_<c>", "persona_a", "persona_b"]
    a = by["persona_a"]
    low, high = wilson_interval(45, 60)
    assert (a["n"], a["win_rate"], a["ci_low"], a["ci_high"]) == (60, 0.75, round(low, 4), round(high, 4))
    assert a["gate"] == "promote" and a["usable_rate"] == {"candidate": 0.6, "baseline": 0.2} and a["eval_judge"] == "checklist"
    overall = report["overall"]
    assert (overall["wins"], overall["ties"], overall["losses"], overall["n"]) == (65, 40, 75, 180)
    assert overall["win_rate"] == round((65 + 20) / 180, 4)
    assert report["per_category"]["basic_alignment"] == {**report["per_category"]["basic_alignment"], "wins": 35, "ties": 22, "losses": 51}
    assert report["per_category"]["edge_case"]["n"] == 72
    assert (report["best"], report["weakest"]) == ("persona_a", "persona_<c>")
    assert report["above_half"] == ["persona_a"] and report["eval_judges"] == ["checklist"] and not report["mixed_judges"]


def test_mixed_and_same_judges_are_called_out(tmp_path):
    root = tmp_path / "runs"
    write_eval(root / "a", "persona_a", 30, 0, 30, created="1", judge="checklist")
    write_eval(root / "b", "persona_b", 30, 0, 30, created="1", judge="rules")
    report = cross_report.build(cross_report.find_evaluations(root))
    assert report["mixed_judges"] and report["same_judge"] == ["persona_b"]
    html = cross_report.render(report)
    assert "different judges" in html and "evaluation judge is the labeling judge" in html


def test_cli_writes_html_and_json(runs, tmp_path, capsys):
    out = tmp_path / "reports" / "all"
    assert main(["report", "--all", "--runs", str(runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 personas" in printed and "best persona_a" in printed and "checklist" in printed
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["best"] == "persona_a" and len(data["personas"]) == 3
    html = out.with_suffix(".html").read_text()
    assert html.count("<svg") >= 3 and "persona_&lt;c&gt;" in html and "persona_<c>" not in html
    assert "evaluation judge(s) <b>checklist</b>" in html and "best: <b>persona_a</b>" in html


def test_cli_without_evaluations_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", "--all", "--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "no evaluation summary" in capsys.readouterr().err
    assert main(["report", "--all", "--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2


def test_cli_rerenders_one_runs_report(tmp_path, capsys):
    run = tmp_path / "run"
    write_eval(run, "persona_a", 3, 1, 1, created="1", win_rate=0.7, ci_low=0.3, ci_high=0.9)
    (run / "eval" / "detailed_results.json").write_text("[]")
    assert main(["report", "--run-dir", str(run)]) == 0
    assert "<svg" in (run / "eval" / "evaluation_report.html").read_text()
    assert main(["report", "--run-dir", str(tmp_path / "nothing")]) == 2


def test_clustered_runs_count_at_their_effective_size(tmp_path):
    # persona_k: 60 pairs from 20 cases answered 3 times, worth 25 independent cases by its own summary.
    write_eval(tmp_path / "k", "persona_k", 45, 0, 15, created="2026-12-01T00:00:00", samples_per_case=3, effective_n=25.0,
               per_category={"basic_alignment": {"n": 60, "wins": 45, "ties": 0, "losses": 15, "effective_n": 25.0}})
    write_eval(tmp_path / "one", "persona_one", 15, 0, 5, created="2026-12-01T00:00:00")
    report = cross_report.build(cross_report.find_evaluations(tmp_path))
    by = {p["persona"]: p for p in report["personas"]}
    k = by["persona_k"]
    low, high = wilson_interval(0.75 * 25, 25)
    assert (k["n"], k["win_rate"], k["effective_n"]) == (60, 0.75, 25.0)
    assert (k["ci_low"], k["ci_high"]) == (round(low, 4), round(high, 4))
    assert k["ci_low"] < round(wilson_interval(45, 60)[0], 4)
    overall = report["overall"]
    assert overall["n"] == 80 and overall["effective_n"] == 45.0
    low, high = wilson_interval(0.75 * 45, 45)
    assert (overall["ci_low"], overall["ci_high"]) == (round(low, 4), round(high, 4))
    assert report["per_category"]["basic_alignment"]["effective_n"] == 25.0
