"""Stage `gate`: promote the candidate only when it is better than the baseline with 95% confidence.

The rule: the lower bound of the win rate's Wilson interval (ties as half) must
reach the persona's `gate.min_win_rate_lower_bound` (default 0.5). Reads
`eval/summary_stats.json`, writes `gate.json`:

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
from pathlib import Path
from typing import Any

from dpo_tasks.config import ConfigError, Persona
from dpo_tasks.runs import RunDir, read_json, write_json

log = logging.getLogger(__name__)

# ci_low is a float computed from counts; a value that equals the threshold
# on paper must not be rejected by rounding in the last bit.
_EPS = 1e-9


def decide(stats: dict[str, Any], threshold: float) -> dict[str, Any]:
    """The gate's decision for one evaluation summary."""
    for key in ("n", "win_rate", "ci_low", "ci_high"):
        if key not in stats:
            raise ConfigError(f"evaluation summary has no {key!r}; keys: {sorted(stats)!r}")
    n, ci_low = int(stats["n"]), float(stats["ci_low"])
    if n == 0:
        decision, reason = "reject", "no evaluation case was judged (n=0); nothing shows the candidate is better"
    elif ci_low + _EPS >= threshold:
        decision = "promote"
        reason = f"win-rate lower bound {ci_low:.3f} >= threshold {threshold:.3f} (win rate {stats['win_rate']:.3f} over {n} cases)"
    else:
        decision = "reject"
        reason = f"win-rate lower bound {ci_low:.3f} < threshold {threshold:.3f} (win rate {stats['win_rate']:.3f} over {n} cases)"
    return {
        "decision": decision,
        "reason": reason,
        "win_rate": stats["win_rate"],
        "ci_low": stats["ci_low"],
        "ci_high": stats["ci_high"],
        "threshold": threshold,
        "n": n,
        "wins": stats.get("wins"),
        "losses": stats.get("losses"),
        "ties": stats.get("ties"),
        "judge": stats.get("judge"),
        "baseline": stats.get("baseline"),
    }


def run(persona: Persona, run_dir: str | Path | RunDir) -> dict[str, Any]:
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    summary_path = rd.eval / "summary_stats.json"
    if not summary_path.exists():
        raise ConfigError(f"no evaluation summary at {str(summary_path)!r}; run the evaluate stage first")
    result = decide(read_json(summary_path), persona.config.gate.min_win_rate_lower_bound)
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
