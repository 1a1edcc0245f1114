"""Stage `gate`: promote the candidate only when it is better than the baseline with 95% confidence.

The rule: the lower bound of the win rate's Wilson interval (ties as half) must
reach the persona's `gate.min_win_rate_lower_bound` (default 0.5). Before that,
it refuses

- when the evaluation judge is the judge that labeled the training pairs (the win
  rate would measure agreement with the labeler), unless `gate.allow_same_judge`;
- when fewer than `gate.min_judged_fraction` (0.9) of the cases were judged, or
  fewer than `gate.min_judged` (15) distinct cases: failed judgements shrink n, and
  4 wins out of 4 judged cases must not promote. With several samples per case
  (`evaluation.samples_per_case`) the fraction counts judged pairs and the minimum
  counts cases: 5 cases answered 4 times are still 5 cases.

Reads `eval/summary_stats.json`, writes `gate.json`:

    {decision: "promote"|"reject", reason, win_rate, ci_low, ci_high, threshold, n, ...}

The command exits 0 either way: rejecting a candidate is a normal outcome, and
the Airflow DAG branches on the file (or the returned summary), not on a
failed task.

Usage:
    python -m dpo_tasks gate --persona persona_e_mexican_vegan --run-dir runs/demo
    python -m dpo_tasks gate ... --set gate.min_win_rate_lower_bound=0.4
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

from dpo_tasks.config import ConfigError, GateConfig, Persona
from dpo_tasks.loaders import InputFileError, brief
from dpo_tasks.runs import RunDir, read_json, write_json

log = logging.getLogger(__name__)

# ci_low is a float computed from counts; a value that equals the threshold
# on paper must not be rejected by rounding in the last bit.
_EPS = 1e-9


def decide(stats: dict[str, Any], gate: GateConfig, *, label_judge: str | None = None) -> dict[str, Any]:
    """The gate's decision for one evaluation summary.

    `label_judge`: the judge that labeled the pairs, when the summary does not say (older summaries).
    """
    if not isinstance(stats, dict):
        raise ConfigError(f"evaluation summary must be a JSON object, got {type(stats).__name__} {brief(stats)}")
    for key in ("n", "win_rate", "ci_low", "ci_high"):
        if key not in stats:
            raise ConfigError(f"evaluation summary has no {key!r}; keys: {brief(sorted(map(str, stats)))}")
        value = stats[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"evaluation summary field {key!r} = {brief(value)} is not a finite number")
        if key != "n" and not 0 <= value <= 1:
            raise ConfigError(f"evaluation summary field {key!r} = {brief(value)} is outside [0, 1]")
    for key in ("n", "failed", "cases_judged"):
        value = stats.get(key) or 0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
            raise ConfigError(f"evaluation summary field {key!r} = {brief(value)} is not a count")
    threshold = gate.min_win_rate_lower_bound
    n, ci_low = int(stats["n"]), float(stats["ci_low"])
    failed = int(stats.get("failed") or 0)
    cases = n + failed
    samples = int(stats.get("samples_per_case") or 1)
    # Distinct cases judged (summaries from before samples_per_case: one pair per case).
    cases_judged = int(stats["cases_judged"]) if stats.get("cases_judged") is not None else n
    eval_judge = stats.get("eval_judge") or stats.get("judge")
    label_judge = stats.get("label_judge") or label_judge
    same_judge = bool(eval_judge and label_judge and eval_judge == label_judge)
    judged_fraction = n / cases if cases else 0.0
    what = "cases" if samples == 1 else f"answer pairs ({samples} per case)"
    counts = f"(win rate {stats['win_rate']:.3f} over {n} judged of {cases} {what})"
    if same_judge and not gate.allow_same_judge:
        decision = "reject"
        reason = (f"the evaluation judge {eval_judge!r} also labeled the training pairs, so the win rate measures agreement "
                  "with the labeler, not a better model; choose another evaluation.judge or set gate.allow_same_judge")
    elif n == 0:
        decision, reason = "reject", f"no evaluation case was judged (n=0 of {cases}); nothing shows the candidate is better"
    elif judged_fraction + _EPS < gate.min_judged_fraction:
        decision = "reject"
        reason = (f"only {n} of {cases} {what} were judged ({judged_fraction:.0%} < gate.min_judged_fraction "
                  f"{gate.min_judged_fraction:.0%}); {failed} failed judgements are not evidence either way")
    elif cases_judged < gate.min_judged:
        decision = "reject"
        reason = (f"only {cases_judged} cases were judged (< gate.min_judged {gate.min_judged}); too few to trust the interval"
                  + (" (samples of one case are not independent cases)" if samples > 1 else ""))
    elif ci_low + _EPS >= threshold:
        decision = "promote"
        reason = f"win-rate lower bound {ci_low:.3f} >= threshold {threshold:.3f} {counts}"
    else:
        decision = "reject"
        reason = f"win-rate lower bound {ci_low:.3f} < threshold {threshold:.3f} {counts}"
    return {
        "decision": decision,
        "reason": reason,
        "win_rate": stats["win_rate"],
        "ci_low": stats["ci_low"],
        "ci_high": stats["ci_high"],
        "threshold": threshold,
        "n": n,
        "cases_judged": cases_judged,
        "samples_per_case": samples,
        "effective_n": stats.get("effective_n"),
        "wins": stats.get("wins"),
        "losses": stats.get("losses"),
        "ties": stats.get("ties"),
        "failed": failed,
        "failed_cases": stats.get("failed_cases", []),
        "judged_fraction": round(judged_fraction, 4),
        "min_judged_fraction": gate.min_judged_fraction,
        "min_judged": gate.min_judged,
        "judge": stats.get("judge"),
        "eval_judge": eval_judge,
        "label_judge": label_judge,
        "same_judge": same_judge,
        "allow_same_judge": gate.allow_same_judge,
        "baseline": stats.get("baseline"),
    }


def read_gate(path: Path) -> dict[str, Any] | None:
    """The gate's decision file (None when the gate has not run); InputFileError when it is damaged.

    Publishing trusts this file to say "promote": anything but the shape `run` writes is refused.
    """
    if not path.exists():
        return None
    gate = read_json(path)
    if not isinstance(gate, dict) or gate.get("decision") not in ("promote", "reject"):
        raise InputFileError(path, f"not a gate decision (expected an object with 'decision': promote or reject), "
                                   f"got {brief(gate)}; rerun the gate stage")
    return gate


def run(persona: Persona, run_dir: str | Path | RunDir) -> dict[str, Any]:
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    summary_path = rd.eval / "summary_stats.json"
    if not summary_path.exists():
        raise ConfigError(f"no evaluation summary at {str(summary_path)!r}; run the evaluate stage first")
    from dpo_tasks.evaluate import labeling_judge

    result = decide(read_json(summary_path), persona.config.gate, label_judge=labeling_judge(persona, rd))
    result["persona"] = persona.id
    write_json(rd.gate, result)
    write_json(rd.stage_summary("gate"), result)
    log.info("gate for %s: %s (%s)", persona.id, result["decision"].upper(), result["reason"])
    return result


def make_parser(command: str = "gate") -> argparse.ArgumentParser:
    from dpo_tasks.cli import add_persona_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_persona_args(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    from dpo_tasks.cli import persona_from_args

    result = run(persona_from_args(args), args.run_dir)
    print(f"gate: {result['decision']}: {result['reason']}")
    return 0
