"""The cross-persona report: every persona's latest evaluation side by side, as HTML and JSON.

What the reference pipeline's summary step gave: per persona and overall win rate
vs the baseline with 95% Wilson intervals, the best and the weakest persona, the
win rate per evaluation category, and which judges produced the numbers.

It reads what `evaluate` wrote (`eval/summary_stats.json`, and `gate.json` when
the gate ran) under a directory of runs, at any depth: `runs/<persona>/<run_id>/`
(Airflow) or `runs/demo/` (the CLI). For each persona the latest evaluation (its
`created` time) is reported; `--every-run` would hide nothing but mix old and
new models, so it is not offered.

The overall win rate pools the personas' judged cases (ties count half), so a
persona with more cases weighs more; its interval treats the cases as
independent. A run with several samples per case (`evaluation.samples_per_case`)
counts at its effective sample size, as its own interval does. When the personas were judged by different evaluation judges the
report says so: a pooled number then mixes yardsticks.

Usage:
    python -m dpo_tasks report --all --runs runs --out reports/all     # -> all.html + all.json
    python -m dpo_tasks report --run-dir runs/demo                    # re-render one run's evaluation_report.html
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from dpo_tasks.report import _CSS, OUTCOME_COLOURS, CANDIDATE_COLOUR, _e, _legend, _pct, _svg, category_chart, interval_chart
from dpo_tasks.stats import effective_wilson_interval

log = logging.getLogger(__name__)

SUMMARY_FILE = Path("eval") / "summary_stats.json"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s: skipped, not readable JSON (%s)", path, exc)
        return None
    if not isinstance(data, dict):
        log.warning("%s: skipped, not a JSON object", path)
        return None
    return data


def find_evaluations(runs: Path) -> dict[str, dict[str, Any]]:
    """persona id -> its latest evaluation summary under `runs` (with `run_dir` and the gate's decision)."""
    latest: dict[str, dict[str, Any]] = {}
    for path in sorted(runs.rglob(str(SUMMARY_FILE))):
        summary = _read_json(path)
        if summary is None:
            continue
        persona = summary.get("persona")
        counts = [summary.get(k) for k in ("wins", "losses", "ties")]
        if not isinstance(persona, str) or not all(isinstance(c, int) and c >= 0 for c in counts):
            log.warning("%s: skipped, not an evaluation summary (needs persona, wins, losses, ties)", path)
            continue
        run_dir = path.parent.parent
        gate = _read_json(run_dir / "gate.json") if (run_dir / "gate.json").exists() else None
        entry = {**summary, "run_dir": str(run_dir), "gate": (gate or {}).get("decision")}
        key = (str(summary.get("created") or ""), str(path))
        if persona not in latest or key > latest[persona]["_key"]:
            latest[persona] = {**entry, "_key": key}
    return {p: {k: v for k, v in e.items() if k != "_key"} for p, e in sorted(latest.items())}


def _effective_n(counts: dict[str, Any]) -> float:
    """What a summary's judged pairs are worth as independent cases (its n unless samples were clustered)."""
    n = sum(int(counts.get(k, 0)) for k in ("wins", "ties", "losses"))
    eff = counts.get("effective_n")
    return float(eff) if isinstance(eff, (int, float)) and not isinstance(eff, bool) and 0 < eff <= n else float(n)


def _rate(wins: int, ties: int, losses: int, effective_n: float | None = None) -> dict[str, Any]:
    n = wins + ties + losses
    score = wins + 0.5 * ties
    eff = n if effective_n is None else effective_n
    low, high = effective_wilson_interval(score, n, eff)
    return {"n": n, "wins": wins, "ties": ties, "losses": losses, "effective_n": round(eff, 4),
            "win_rate": round(score / n, 4) if n else None, "ci_low": round(low, 4), "ci_high": round(high, 4)}


def build(evaluations: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The report's data: per persona, overall, per category, best and weakest, judges."""
    personas = []
    for pid, s in evaluations.items():
        row = _rate(s["wins"], s["ties"], s["losses"], _effective_n(s))
        personas.append({
            "persona": pid, **row, "failed": s.get("failed", 0),
            "eval_judge": s.get("eval_judge") or s.get("judge"), "label_judge": s.get("label_judge"),
            "same_judge": s.get("same_judge"), "usable_rate": s.get("usable_rate"),
            "truncation_rate": s.get("truncation_rate"), "second_opinion": (s.get("second_opinion") or {}).get("win_rate"),
            "agreement": (s.get("second_opinion") or {}).get("agreement"), "gate": s.get("gate"),
            "created": s.get("created"), "run_dir": s["run_dir"],
        })
    totals = {k: sum(p[k] for p in personas) for k in ("wins", "ties", "losses", "effective_n")}
    categories: dict[str, dict[str, Any]] = {}
    for s in evaluations.values():
        for cat, c in (s.get("per_category") or {}).items():
            acc = categories.setdefault(cat, {"wins": 0, "ties": 0, "losses": 0, "effective_n": 0.0})
            for k in ("wins", "ties", "losses"):
                acc[k] += int(c.get(k, 0))
            acc["effective_n"] += _effective_n(c)
    ranked = sorted((p for p in personas if p["n"]), key=lambda p: (p["win_rate"], p["ci_low"]))
    judges = sorted({str(p["eval_judge"]) for p in personas})
    return {
        "personas": personas,
        "overall": {**_rate(**totals), "personas": len(personas)},
        "per_category": {cat: _rate(**c) for cat, c in categories.items()},
        "best": ranked[-1]["persona"] if ranked else None,
        "weakest": ranked[0]["persona"] if ranked else None,
        "eval_judges": judges,
        "label_judges": sorted({str(p["label_judge"]) for p in personas}),
        "mixed_judges": len(judges) > 1,
        "same_judge": sorted(p["persona"] for p in personas if p["same_judge"]),
        "above_half": sorted(p["persona"] for p in personas if p["n"] and p["ci_low"] > 0.5),
    }


def forest_chart(rows: list[dict[str, Any]]) -> str:
    """One line per persona: its win rate and 95% interval on a shared 0..1 axis, the no-difference line dashed."""
    label_w, plot_w, row_h, top = 230, 460, 26, 10

    def x(v: float) -> float:
        return label_w + plot_w * v

    height = top + row_h * len(rows) + 30
    axis_y = top + row_h * len(rows) + 4
    parts = [f'<line x1="{x(0.5):.1f}" y1="{top}" x2="{x(0.5):.1f}" y2="{axis_y}" stroke="#718096" stroke-dasharray="4 3"/>',
             f'<line x1="{x(0):.1f}" y1="{axis_y}" x2="{x(1):.1f}" y2="{axis_y}" stroke="#4a5568"/>']
    parts += [f'<text x="{x(t):.1f}" y="{axis_y + 16}" font-size="11" text-anchor="middle">{t:.2f}</text>' for t in (0, 0.25, 0.5, 0.75, 1.0)]
    for i, r in enumerate(rows):
        y = top + i * row_h + 12
        parts.append(f'<text x="{label_w - 8}" y="{y + 4}" font-size="12" text-anchor="end">{_e(r["label"])}</text>')
        if r.get("win_rate") is None:
            continue
        colour = "#1a202c" if r.get("overall") else CANDIDATE_COLOUR
        parts.append(
            f'<line class="ci" x1="{x(r["ci_low"]):.1f}" y1="{y}" x2="{x(r["ci_high"]):.1f}" y2="{y}" stroke="{colour}" stroke-width="3">'
            f'<title>{_e(r["label"])}: {r["win_rate"]:.3f} ({r["ci_low"]:.3f} – {r["ci_high"]:.3f})</title></line>'
            f'<circle cx="{x(r["win_rate"]):.1f}" cy="{y}" r="{6 if r.get("overall") else 5}" fill="{colour}"/>'
        )
    return _svg(label_w + plot_w + 20, height, "".join(parts), "win rate and 95% interval per persona")


def render(report: dict[str, Any]) -> str:
    overall = report["overall"]
    personas = report["personas"]
    judges = ", ".join(report["eval_judges"]) or "none"
    notes = []
    if report["mixed_judges"]:
        notes.append(f'<p class="warn">The personas were evaluated by different judges ({_e(judges)}): the overall number '
                     "pools different yardsticks.</p>")
    if report["same_judge"]:
        notes.append(f'<p class="warn">For {_e(", ".join(report["same_judge"]))} the evaluation judge is the labeling judge: '
                     "those win rates measure agreement with the labeler, not a better model.</p>")
    rows = [{"label": p["persona"], **p} for p in personas] + [{"label": "all personas (pooled)", "overall": True, **overall}]
    table = "".join(
        f'<tr><td>{_e(p["persona"])}</td><td class="num">{_e(p["n"])}</td><td class="num">{_pct(p["win_rate"])}</td>'
        f'<td class="num">{_pct(p["ci_low"])} – {_pct(p["ci_high"])}</td>'
        f'<td class="num">{_e(p["wins"])} / {_e(p["ties"])} / {_e(p["losses"])}</td><td class="num">{_e(p["failed"])}</td>'
        f'<td class="num">{_pct((p["usable_rate"] or {}).get("baseline"))} → {_pct((p["usable_rate"] or {}).get("candidate"))}</td>'
        f'<td>{_e(p["eval_judge"])}</td><td>{_e(p["label_judge"] or "unknown")}</td><td>{_e(p["gate"] or "")}</td></tr>'
        for p in personas
    )
    sections = [
        "<h1>Persona DPO: all personas</h1>",
        f'<p class="meta">evaluation judge(s) <b>{_e(judges)}</b> · labeling judge(s) <b>{_e(", ".join(report["label_judges"]) or "none")}</b> · '
        f'{_e(overall["personas"])} personas, {_e(overall["n"])} judged cases · the latest evaluation of each persona · ties count half</p>',
        *notes,
        '<div class="card headline">'
        f'<div><div class="big">{_pct(overall["win_rate"])}</div><div>overall win rate vs baseline (pooled cases)</div></div>'
        f'<div><div>95% Wilson interval <b>{_pct(overall["ci_low"])} – {_pct(overall["ci_high"])}</b></div>'
        + (interval_chart(overall["win_rate"], overall["ci_low"], overall["ci_high"]) if overall["win_rate"] is not None else "")
        + f'<div>best: <b>{_e(report["best"])}</b> · weakest: <b>{_e(report["weakest"])}</b> · '
        f'lower bound above 0.5: <b>{_e(len(report["above_half"]))} of {_e(len(personas))}</b></div></div></div>',
        "<h2>Per persona</h2>",
        '<div class="card">' + forest_chart(rows) + "</div>",
        '<div class="card"><table><thead><tr><th>persona</th><th>n</th><th>win rate</th><th>95% CI</th><th>W / T / L</th>'
        "<th>not judged</th><th>usable answers base → DPO</th><th>evaluation judge</th><th>labeling judge</th><th>gate</th></tr></thead>"
        f"<tbody>{table}</tbody></table></div>",
        "<h2>Per category (all personas)</h2>",
        '<div class="card">' + _legend([(k, c) for k, c in OUTCOME_COLOURS.items()]) + category_chart(report["per_category"]) + "</div>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>Persona DPO: all personas</title>'
        f"<style>{_CSS}</style></head><body><main>" + "".join(sections) + "</main></body></html>\n"
    )


def write(runs: str | Path, out: str | Path) -> dict[str, Any]:
    """Write `<out>.html` and `<out>.json` (a `.html`/`.json` suffix on `out` is dropped); return the report."""
    runs = Path(runs)
    if not runs.is_dir():
        raise FileNotFoundError(f"runs directory {str(runs)!r} does not exist")
    evaluations = find_evaluations(runs)
    if not evaluations:
        raise FileNotFoundError(f"no evaluation summary ({SUMMARY_FILE}) under {str(runs)!r}; run the evaluate stage first")
    report = build(evaluations)
    out = Path(out)
    if out.suffix in (".html", ".json"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    report["html"] = str(out.with_suffix(".html"))
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".html").write_text(render(report))
    return report


def make_parser(command: str = "report") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--all", action="store_true", help="the cross-persona report from every run under --runs")
    mode.add_argument("--run-dir", help="re-render one run's eval/evaluation_report.html from its summary and details")
    parser.add_argument("--runs", default="runs", help="directory holding run directories, at any depth (default: runs)")
    parser.add_argument("--out", default="reports/all", help="output path without suffix: writes OUT.html and OUT.json")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.run_dir:
        from dpo_tasks.report import render_report

        eval_dir = Path(args.run_dir) / "eval"
        summary, details = eval_dir / "summary_stats.json", eval_dir / "detailed_results.json"
        if not summary.is_file() or not details.is_file():
            print(f"error: {eval_dir} has no summary_stats.json and detailed_results.json; run evaluate first", file=sys.stderr)
            return 2
        (eval_dir / "evaluation_report.html").write_text(render_report(json.loads(summary.read_text()), json.loads(details.read_text())))
        print(f"report: {eval_dir / 'evaluation_report.html'}")
        return 0
    try:
        report = write(args.runs, args.out)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    o = report["overall"]
    print(f"report: {o['personas']} personas, overall win rate {o['win_rate']:.3f} (95% CI {o['ci_low']:.3f}-{o['ci_high']:.3f}) "
          f"over {o['n']} cases; best {report['best']}, weakest {report['weakest']}; evaluation judge(s) "
          f"{', '.join(report['eval_judges'])} -> {report['html']}")
    return 0
