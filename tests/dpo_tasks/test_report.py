import re

import pytest

from dpo_tasks.report import render_report
from dpo_tasks.stats import win_rate

EVIL = '<script>alert("pwned")</script><img src=x onerror=alert(1)> & "quotes"'


def scores(v):
    return {c: v for c in ("persona_alignment", "constraint_compliance", "preferred_ingredients", "structure", "overall")}


def make(confidence=None):
    outcomes = ["win"] * 5 + ["tie"] * 2 + ["loss"] * 3
    details = [
        {"id": f"case-{i}", "category": "basic_alignment" if i < 6 else "constraint_stress", "prompt": f"request {i} {EVIL}",
         "candidate_response": f"candidate answer {i} {EVIL}", "baseline_response": f"baseline answer {i}",
         "outcome": o, "status": "ok" if o != "tie" else "disagree",
         "scores_candidate": scores(8.0 - i * 0.3), "scores_baseline": scores(4.0 + i * 0.2), "reason": f"reason {EVIL}"}
        for i, o in enumerate(outcomes)
    ]
    overall = win_rate(outcomes).as_dict()
    summary = overall | {
        "persona": "persona_e_mexican_vegan", "judge": "rules", "failed": 0,
        "per_category": {
            "basic_alignment": win_rate(outcomes[:6]).as_dict(),
            "constraint_stress": win_rate(outcomes[6:]).as_dict(),
        },
        "criteria_means": {"candidate": scores(6.5), "baseline": scores(5.0)},
        "confidence": confidence or {},
        "baseline": {"kind": "base", "label": "base model", "base": "smollm2-135m-instruct"},
        "candidate": {"kind": "candidate", "label": "DPO adapter", "adapter": "runs/x/train/adapter"},
    }
    return summary, details


def test_report_has_every_chart():
    html = render_report(*make())
    assert html.count("<svg") == 4  # interval, categories, means, distributions
    assert "60.0%" in html  # headline win rate (5 wins + 2 ties / 10)
    # only segments with a count are drawn: basic_alignment has no loss, constraint_stress no win
    assert len(re.findall(r'class="bar-win"', html)) == 1 and len(re.findall(r'class="bar-loss"', html)) == 1
    assert len(re.findall(r'class="bar-tie"', html)) == 2
    assert len(re.findall(r'class="box-candidate"', html)) == 5 and len(re.findall(r'class="box-baseline"', html)) == 5
    assert len(re.findall(r'class="mean-candidate"', html)) == 5
    assert html.count("<tr>") == 1 + 10


def test_model_text_is_escaped():
    html = render_report(*make())
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html
    assert "&amp; &quot;quotes&quot;" in html


def test_report_is_self_contained():
    html = render_report(*make())
    urls = re.findall(r"<[^>]*\b(?:src|href)\s*=", html)
    assert urls == [], "no external resources"
    assert re.findall(r"https?://[^\"']+", html) == ["http://www.w3.org/2000/svg"] * 4  # SVG namespace only


@pytest.mark.parametrize(
    ("confidence", "charts"),
    [pytest.param({}, 4, id="judge-without-confidence"), pytest.param({"high": 6, "medium": 3, "low": 1}, 5, id="api-judge")],
)
def test_confidence_chart_only_when_the_judge_gives_one(confidence, charts):
    html = render_report(*make(confidence))
    assert html.count("<svg") == charts
    assert ("Judge confidence" in html) == bool(confidence)


def test_confidence_levels_are_ordered_high_to_low():
    html = render_report(*make({"low": 1, "high": 6, "medium": 3}))
    section = html[html.index("Judge confidence"):]
    assert section.index(">high<") < section.index(">medium<") < section.index(">low<")
