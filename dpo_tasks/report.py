"""The evaluation report: one self-contained HTML file, readable offline.

No JavaScript, no CDN, no external fonts: charts are inline SVG drawn here,
so the file can be attached to a model card, opened from a bucket or an
Airflow worker's disk, and it looks the same in ten years. Every piece of
model or user text goes through `html.escape`: model output is untrusted.

    render_report(summary, details) -> str
"""

from __future__ import annotations

import html
from statistics import median
from typing import Any, Sequence

from dpo_tasks.judges.base import CRITERIA

CANDIDATE_COLOUR = "#2b6cb0"
BASELINE_COLOUR = "#a0aec0"
OUTCOME_COLOURS = {"win": "#38a169", "tie": "#ecc94b", "loss": "#e53e3e"}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f7fafc;color:#1a202c}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
.meta{color:#4a5568;font-size:.9em}.warn{background:#fff5f5;border:1px solid #c53030;color:#742a2a;border-radius:6px;padding:8px 12px}.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:16px;margin:12px 0}
.headline{display:flex;gap:32px;align-items:center;flex-wrap:wrap}.big{font-size:3em;font-weight:700}
.counts span{display:inline-block;margin-right:14px}.legend span{margin-right:16px;font-size:.85em}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:middle}
table{border-collapse:collapse;width:100%;font-size:.88em}th,td{border-bottom:1px solid #e2e8f0;padding:6px;text-align:left;vertical-align:top}
th{background:#edf2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.win{color:#276749;font-weight:600}.loss{color:#9b2c2c;font-weight:600}.tie{color:#975a16;font-weight:600}
details pre{white-space:pre-wrap;word-break:break-word;background:#f7fafc;border:1px solid #e2e8f0;padding:8px;border-radius:4px;max-height:360px;overflow:auto}
svg text{font-family:inherit}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _svg(width: int, height: int, body: str, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_e(label)}" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">{body}</svg>')


def interval_chart(win_rate: float, low: float, high: float, *, reference: float = 0.5) -> str:
    """The win rate on a 0..1 axis with its 95% interval and the no-difference line."""
    w, h, x0, x1 = 520, 70, 20, 500

    def x(v: float) -> float:
        return x0 + (x1 - x0) * v

    ticks = "".join(
        f'<line x1="{x(t):.1f}" y1="44" x2="{x(t):.1f}" y2="49" stroke="#4a5568"/>'
        f'<text x="{x(t):.1f}" y="62" font-size="11" text-anchor="middle">{t:.1f}</text>'
        for t in (0, 0.25, 0.5, 0.75, 1.0)
    )
    body = (
        f'<line x1="{x0}" y1="44" x2="{x1}" y2="44" stroke="#4a5568"/>{ticks}'
        f'<line x1="{x(reference):.1f}" y1="6" x2="{x(reference):.1f}" y2="44" stroke="#718096" stroke-dasharray="4 3"/>'
        f'<line class="ci" x1="{x(low):.1f}" y1="25" x2="{x(high):.1f}" y2="25" stroke="{CANDIDATE_COLOUR}" stroke-width="4"/>'
        f'<line x1="{x(low):.1f}" y1="17" x2="{x(low):.1f}" y2="33" stroke="{CANDIDATE_COLOUR}" stroke-width="2"/>'
        f'<line x1="{x(high):.1f}" y1="17" x2="{x(high):.1f}" y2="33" stroke="{CANDIDATE_COLOUR}" stroke-width="2"/>'
        f'<circle cx="{x(win_rate):.1f}" cy="25" r="7" fill="{CANDIDATE_COLOUR}"/>'
    )
    return _svg(w, h, body, f"win rate {win_rate:.3f}, 95% interval {low:.3f} to {high:.3f}")


def category_chart(per_category: dict[str, dict[str, Any]]) -> str:
    """One stacked bar (wins / ties / losses) per category, labelled with its win rate."""
    row_h, label_w, bar_w = 30, 170, 560
    rows = []
    for i, (cat, c) in enumerate(per_category.items()):
        y = 10 + i * row_h
        n = max(int(c.get("n", 0)), 1)
        xpos = label_w
        segs = []
        for outcome, key in (("win", "wins"), ("tie", "ties"), ("loss", "losses")):
            width = bar_w * int(c.get(key, 0)) / n
            if width > 0:
                segs.append(
                    f'<rect class="bar-{outcome}" x="{xpos:.1f}" y="{y}" width="{width:.1f}" height="20" fill="{OUTCOME_COLOURS[outcome]}">'
                    f'<title>{_e(cat)}: {c.get(key, 0)} {key}</title></rect>'
                )
            xpos += width
        rows.append(
            f'<text x="{label_w - 8}" y="{y + 15}" font-size="12" text-anchor="end">{_e(cat)} (n={c.get("n", 0)})</text>'
            + "".join(segs)
            + f'<text x="{label_w + bar_w + 8}" y="{y + 15}" font-size="12">{_pct(c.get("win_rate"))}</text>'
        )
    height = 20 + row_h * max(len(per_category), 1)
    return _svg(label_w + bar_w + 70, height, "".join(rows), "wins, ties and losses per category")


def means_chart(criteria_means: dict[str, dict[str, float | None]]) -> str:
    """Mean score (0-10) per criterion, candidate next to baseline."""
    group_w, bar_w, plot_h, top = 130, 36, 180, 20
    bars, labels = [], []
    for i, crit in enumerate(CRITERIA):
        gx = 50 + i * group_w
        for j, (model, colour) in enumerate((("candidate", CANDIDATE_COLOUR), ("baseline", BASELINE_COLOUR))):
            value = (criteria_means.get(model) or {}).get(crit)
            if value is None:
                continue
            bh = plot_h * value / 10
            bx = gx + j * (bar_w + 4)
            bars.append(
                f'<rect class="mean-{model}" x="{bx}" y="{top + plot_h - bh:.1f}" width="{bar_w}" height="{bh:.1f}" fill="{colour}">'
                f'<title>{_e(crit)} {model}: {value:.2f}</title></rect>'
                f'<text x="{bx + bar_w / 2}" y="{top + plot_h - bh - 4:.1f}" font-size="11" text-anchor="middle">{value:.1f}</text>'
            )
        labels.append(f'<text x="{gx + bar_w + 2}" y="{top + plot_h + 16}" font-size="11" text-anchor="middle">{_e(crit.replace("_", " "))}</text>')
    axis = "".join(
        f'<line x1="44" y1="{top + plot_h - plot_h * t / 10:.1f}" x2="{50 + group_w * len(CRITERIA)}" y2="{top + plot_h - plot_h * t / 10:.1f}" stroke="#edf2f7"/>'
        f'<text x="38" y="{top + plot_h - plot_h * t / 10 + 4:.1f}" font-size="10" text-anchor="end">{t}</text>'
        for t in (0, 2, 4, 6, 8, 10)
    )
    return _svg(60 + group_w * len(CRITERIA), top + plot_h + 30, axis + "".join(bars) + "".join(labels), "mean score per criterion")


def _quartiles(values: Sequence[float]) -> tuple[float, float, float, float, float]:
    v = sorted(values)
    n = len(v)
    lower, upper = v[: n // 2], v[(n + 1) // 2:]
    q1 = median(lower) if lower else v[0]
    q3 = median(upper) if upper else v[-1]
    return v[0], q1, median(v), q3, v[-1]


def distribution_chart(scores: dict[str, dict[str, list[float]]]) -> str:
    """Box plots (min, quartiles, median, max) per criterion for both models, points overlaid."""
    group_w, box_w, plot_h, top = 130, 30, 180, 14
    parts = []
    for i, crit in enumerate(CRITERIA):
        gx = 60 + i * group_w
        for j, (model, colour) in enumerate((("candidate", CANDIDATE_COLOUR), ("baseline", BASELINE_COLOUR))):
            values = (scores.get(model) or {}).get(crit) or []
            if not values:
                continue
            cx = gx + j * (box_w + 14)

            def y(v: float) -> float:
                return top + plot_h - plot_h * v / 10

            lo, q1, med, q3, hi = _quartiles(values)
            parts.append(
                f'<g class="box-{model}"><title>{_e(crit)} {model}: min {lo:.1f}, q1 {q1:.1f}, median {med:.1f}, q3 {q3:.1f}, max {hi:.1f} (n={len(values)})</title>'
                f'<line x1="{cx + box_w / 2}" y1="{y(hi):.1f}" x2="{cx + box_w / 2}" y2="{y(lo):.1f}" stroke="{colour}"/>'
                f'<rect x="{cx}" y="{y(q3):.1f}" width="{box_w}" height="{max(y(q1) - y(q3), 1):.1f}" fill="{colour}" fill-opacity="0.35" stroke="{colour}"/>'
                f'<line x1="{cx}" y1="{y(med):.1f}" x2="{cx + box_w}" y2="{y(med):.1f}" stroke="#1a202c" stroke-width="2"/>'
                + "".join(
                    f'<circle cx="{cx + box_w / 2 + ((k % 5) - 2) * 3}" cy="{y(v):.1f}" r="1.8" fill="{colour}"/>'
                    for k, v in enumerate(values)
                )
                + "</g>"
            )
        parts.append(f'<text x="{gx + box_w + 7}" y="{top + plot_h + 16}" font-size="11" text-anchor="middle">{_e(crit.replace("_", " "))}</text>')
    axis = "".join(
        f'<line x1="54" y1="{top + plot_h - plot_h * t / 10:.1f}" x2="{60 + group_w * len(CRITERIA)}" y2="{top + plot_h - plot_h * t / 10:.1f}" stroke="#edf2f7"/>'
        f'<text x="48" y="{top + plot_h - plot_h * t / 10 + 4:.1f}" font-size="10" text-anchor="end">{t}</text>'
        for t in (0, 2, 4, 6, 8, 10)
    )
    return _svg(70 + group_w * len(CRITERIA), top + plot_h + 30, axis + "".join(parts), "score distributions per criterion")


_CONFIDENCE_ORDER = {"high": 0, "medium": 1, "low": 2}


def confidence_chart(confidence: dict[str, int]) -> str:
    total = max(sum(confidence.values()), 1)
    rows = []
    levels = sorted(confidence.items(), key=lambda kv: (_CONFIDENCE_ORDER.get(kv[0], 3), kv[0]))
    for i, (level, count) in enumerate(levels):
        y = 8 + i * 26
        rows.append(
            f'<text x="72" y="{y + 14}" font-size="12" text-anchor="end">{_e(level)}</text>'
            f'<rect class="conf" x="80" y="{y}" width="{300 * count / total:.1f}" height="18" fill="{CANDIDATE_COLOUR}"/>'
            f'<text x="{86 + 300 * count / total:.1f}" y="{y + 14}" font-size="12">{count}</text>'
        )
    return _svg(440, 16 + 26 * max(len(confidence), 1), "".join(rows), "judge confidence")


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(f'<span><i class="sw" style="background:{c}"></i>{_e(t)}</span>' for t, c in items) + "</div>"


def _describe_model(info: dict[str, Any] | None) -> str:
    if not info:
        return "n/a"
    bits = [str(info.get("label") or info.get("kind") or "")]
    for key in ("version", "adapter", "base"):
        if info.get(key):
            bits.append(f"{key}: {info[key]}")
    if info.get("note"):
        bits.append(str(info["note"]))
    return "; ".join(b for b in bits if b)


def _score(scores: dict[str, float]) -> str:
    return f"{scores['overall']:.1f}" if "overall" in scores else "–"


def _checks(result: dict[str, Any]) -> str:
    state = "usable" if result.get("usable") else "not usable: fails " + ", ".join(result.get("failed") or [])
    return (f"{state}\npassed {result.get('passed')}/{result.get('total')} · {result.get('ingredients')} ingredients · "
            f"{result.get('steps')} steps" + (" · cut off" if result.get("cut_off") else ""))


def _case_rows(details: Sequence[dict[str, Any]]) -> str:
    rows = []
    for d in details:
        outcome = d.get("outcome", "")
        sc, sb = d.get("scores_candidate") or {}, d.get("scores_baseline") or {}
        rows.append(
            "<tr>"
            f"<td>{_e(d.get('id', ''))}</td><td>{_e(d.get('category', ''))}</td>"
            f"<td>{_e(d.get('prompt', ''))}</td>"
            f'<td class="{_e(outcome)}">{_e(outcome)}<br><small>{_e(d.get("status", ""))}</small></td>'
            f'<td class="num">{_score(sc)}</td><td class="num">{_score(sb)}</td>'
            "<td>"
            f"<details><summary>candidate</summary><pre>{_e(d.get('candidate_response', ''))}</pre></details>"
            f"<details><summary>baseline</summary><pre>{_e(d.get('baseline_response', ''))}</pre></details>"
            + (f"<details><summary>judge</summary><pre>{_e(d.get('reason', ''))}</pre></details>" if d.get("reason") else "")
            + "".join(
                f"<details><summary>{role} checks</summary><pre>{_e(_checks(d[f'checks_{role}']))}</pre></details>"
                for role in ("candidate", "baseline") if d.get(f"checks_{role}")
            )
            + "</td></tr>"
        )
    return "".join(rows)


def _judge_notes(summary: dict[str, Any]) -> list[str]:
    """What the reader must know before trusting the win rate: same judge, unjudged cases, checklists, usable answers."""
    notes = []
    if summary.get("same_judge"):
        notes.append(
            f'<p class="warn"><b>The evaluation judge is the labeling judge ({_e(summary.get("eval_judge"))}).</b> '
            "This win rate measures agreement with the judge that made the training labels, not a better model; "
            "the gate refuses it unless gate.allow_same_judge is set.</p>"
        )
    failed = summary.get("failed_cases") or []
    samples = summary.get("samples_per_case") or 1
    if failed:
        total = len(failed) + (summary.get("n") or 0)
        what = "cases" if samples == 1 else "answer pairs"
        notes.append(f'<p class="warn">{len(failed)} of {_e(total)} {what} '
                     f"were not judged and count for nobody: {_e(', '.join(failed))}</p>")
    if samples > 1:
        notes.append(
            f'<p class="meta">{_e(samples)} answers per model and case: {_e(summary.get("n"))} judged pairs from '
            f'{_e(summary.get("cases_judged"))} cases. The samples of one case are not independent, so the interval is '
            f'taken at the effective sample size <b>{_e(summary.get("effective_n"))}</b> (design effect '
            f'{_e(summary.get("design_effect"))}, the case as the cluster)</p>'
        )
    usable = summary.get("usable_rate")
    if usable:
        notes.append(
            f'<p class="meta">usable answers (every check of the case\'s checklist passed: on the request, ingredients and '
            f'steps, not cut off, within the persona\'s rules): candidate <b>{_pct(usable.get("candidate"))}</b>, '
            f'baseline <b>{_pct(usable.get("baseline"))}</b> · {_e(summary.get("checklists_written", 0))} of '
            f'{_e(summary.get("cases"))} cases have a written checklist, the others a derived one</p>'
        )
    second = summary.get("second_opinion")
    if second:
        notes.append(
            f'<p class="meta">second opinion: the {_e(second.get("judge"))} judge gives a win rate of {_pct(second.get("win_rate"))} '
            f'(95% CI {_pct(second.get("ci_low"))} – {_pct(second.get("ci_high"))}) and agrees with the evaluation judge on '
            f'{_pct(second.get("agreement"))} of {_e(second.get("agreement_n"))} {"cases" if samples == 1 else "answer pairs"}</p>'
        )
    truncation = summary.get("truncation_rate")
    if truncation:
        notes.append(f'<p class="meta">answers cut off at the token limit: candidate {_pct(truncation.get("candidate"))}, '
                     f'baseline {_pct(truncation.get("baseline"))}</p>')
    return notes


def render_report(summary: dict[str, Any], details: Sequence[dict[str, Any]]) -> str:
    scores: dict[str, dict[str, list[float]]] = {"candidate": {}, "baseline": {}}
    for d in details:
        for model in scores:
            for crit, value in (d.get(f"scores_{model}") or {}).items():
                scores[model].setdefault(crit, []).append(float(value))
    confidence = summary.get("confidence") or {}
    title = f"Evaluation: {summary.get('persona', '')}"
    sections = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">evaluation judge <b>{_e(summary.get("eval_judge") or summary.get("judge"))}</b> · labeling judge '
        f'<b>{_e(summary.get("label_judge") or "unknown")}</b> · {_e(summary.get("n"))} {"cases" if (summary.get("samples_per_case") or 1) == 1 else "answer pairs"}, each judged in both orders '
        f"(a win counts only when both orders agree, otherwise a tie) · created {_e(summary.get('created', ''))}</p>",
        *_judge_notes(summary),
        f'<p class="meta">candidate: {_e(_describe_model(summary.get("candidate")))}<br>baseline: {_e(_describe_model(summary.get("baseline")))}</p>',
        '<div class="card headline">'
        f'<div><div class="big">{_pct(summary.get("win_rate"))}</div><div>win rate vs baseline (ties count half)</div></div>'
        f'<div><div>95% Wilson interval <b>{_pct(summary.get("ci_low"))} – {_pct(summary.get("ci_high"))}</b></div>'
        + interval_chart(summary.get("win_rate", 0.5), summary.get("ci_low", 0.0), summary.get("ci_high", 1.0))
        + f'<div class="counts"><span class="win">{_e(summary.get("wins"))} wins</span><span class="tie">{_e(summary.get("ties"))} ties</span>'
        f'<span class="loss">{_e(summary.get("losses"))} losses</span>'
        + (f'<span>{_e(summary.get("failed"))} not judged</span>' if summary.get("failed") else "")
        + "</div></div></div>",
        "<h2>Per category</h2>",
        '<div class="card">' + _legend([(k, c) for k, c in OUTCOME_COLOURS.items()]) + category_chart(summary.get("per_category") or {}) + "</div>",
        "<h2>Mean score per criterion</h2>",
        '<div class="card">' + _legend([("candidate", CANDIDATE_COLOUR), ("baseline", BASELINE_COLOUR)]) + means_chart(summary.get("criteria_means") or {}) + "</div>",
        "<h2>Score distributions</h2>",
        '<div class="card">' + _legend([("candidate", CANDIDATE_COLOUR), ("baseline", BASELINE_COLOUR)]) + distribution_chart(scores) + "</div>",
    ]
    if confidence:
        sections += ["<h2>Judge confidence</h2>", '<div class="card">' + confidence_chart(confidence) + "</div>"]
    sections += [
        "<h2>Every case</h2>",
        '<div class="card"><table><thead><tr><th>id</th><th>category</th><th>request</th><th>outcome</th>'
        "<th>candidate overall</th><th>baseline overall</th><th>answers</th></tr></thead><tbody>"
        + _case_rows(details) + "</tbody></table></div>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head><body><main>" + "".join(sections) + "</main></body></html>\n"
    )
