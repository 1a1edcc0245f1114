"""Stage `label`: judge each prompt's two variants into a chosen/rejected pair.

    python -m dpo_tasks label --persona persona_e_mexican_vegan --run-dir runs/demo [--judge rules] [--min-margin 1.0]

Reads `variants.jsonl`, writes `labeled.jsonl` and `summaries/label.json`.
The judge is `labeling.judge` from personas.yaml (or `--judge`). Every pair is
judged in both orders and kept only when both orders pick the same winner by
at least `labeling.min_margin` overall points; ties, disagreements, invalid or
failed verdicts, pairs under the margin, and pairs whose variants are empty or
identical are dropped and counted by reason, and so are pairs whose chosen answer
was cut off at `generation.max_new_tokens` (`chosen_cut_off`: the generator's record
in `variants.jsonl`; training on it would teach the model to stop mid-recipe). Pairs from user feedback
(`feedback_pairs.jsonl`, if present) are validated and appended with source
"feedback".

With `labeling.judge: reward` the row's N candidates (`variant_a`, `variant_b`,
`variant_c`, ...) are ranked by a reward model instead: best vs worst, kept when
the reward margin reaches `labeling.reward.min_margin` (see dpo_tasks.judges.reward).

`labeled.jsonl` is rewritten atomically on every run. API judges keep their own
verdict cache in `<run_dir>/judge_cache/`, so a rerun after a kill makes no
call for pairs already judged.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from typing import Any

from dpo_tasks.cli import add_persona_args, persona_from_args
from dpo_tasks.config import Persona, with_overrides
from dpo_tasks.judges import make_judge
from dpo_tasks.judges.base import Judge, PairItem
from dpo_tasks.runs import Progress, RunDir, read_jsonl, write_json, write_jsonl
from dpo_tasks.validate import content, validate_records

log = logging.getLogger(__name__)

VARIANT_FIELDS = ("id", "prompt", "variant_a", "variant_b")
DROP_REASONS = ("malformed", "empty", "identical", "tie", "disagree", "under_margin", "invalid", "failed", "chosen_cut_off")


def _drop_cut_off_chosen(labeled: list[dict[str, Any]], rows: list[dict[str, Any]], drops: Counter) -> list[dict[str, Any]]:
    """Pairs whose chosen answer ran into the token limit are dropped: DPO would teach stopping mid-recipe.

    Each kept pair records whether its answers were cut off (`chosen_cut_off`, `rejected_cut_off`), so
    format can refuse to close a cut-off rejected answer as a finished turn.
    """
    by_id = {str(r.get("id")): r for r in rows}
    kept = []
    for pair in labeled:
        row = by_id.get(str(pair["id"]), {})
        chosen = bool(row.get(f"variant_{pair['chosen_variant']}_cut_off"))
        rejected_variant = pair.get("rejected_variant") or ("b" if pair["chosen_variant"] == "a" else "a")
        if chosen:
            drops["chosen_cut_off"] += 1
            continue
        kept.append(pair | {"chosen_cut_off": False, "rejected_cut_off": bool(row.get(f"variant_{rejected_variant}_cut_off"))})
    return kept


def judge_options(kind: str, run_dir: RunDir) -> dict[str, Any]:
    """Local judges need nothing; API judges cache verdicts in the run dir so reruns resume."""
    return {} if kind in ("rules", "reward", "checklist") else {"cache_dir": run_dir.root / "judge_cache"}


def _screen(rows: list[dict[str, Any]], drops: Counter) -> list[PairItem]:
    """Pairs worth judging; the rest are counted and logged with their position."""
    items = []
    for n, row in enumerate(rows, start=1):
        missing = [f for f in VARIANT_FIELDS if not isinstance(row.get(f), str)]
        if missing:
            drops["malformed"] += 1
            log.warning("variants.jsonl record %d (id %r): missing or non-text %s; skipped", n, row.get("id"), ", ".join(missing))
            continue
        a, b = content(row["variant_a"]), content(row["variant_b"])
        if not a or not b:
            drops["empty"] += 1
        elif a == b:
            drops["identical"] += 1
        else:
            items.append(PairItem(id=row["id"], prompt=row["prompt"], response_a=row["variant_a"], response_b=row["variant_b"]))
    return items


def _feedback_pairs(run_dir: RunDir) -> tuple[list[dict[str, Any]], int]:
    if not run_dir.feedback_pairs.exists():
        return [], 0
    rows = read_jsonl(run_dir.feedback_pairs)
    result = validate_records(rows, where=[f"{run_dir.feedback_pairs.name} record {i + 1}" for i in range(len(rows))])
    for problem in result.problems:
        log.warning("%s; skipped", problem)
    kept = [
        {"id": r.get("id", f"feedback-{i}"), "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
         "chosen_variant": None, "margin": None, "scores_chosen": None, "scores_rejected": None,
         "judge": None, "source": "feedback"}
        for i, r in enumerate(result.good)
    ]
    return kept, result.bad


def run(persona: Persona, run_dir: str | RunDir, *, judge: Judge | None = None) -> dict[str, Any]:
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run_dir.variants.exists():
        raise FileNotFoundError(f"{run_dir.variants} not found: run the generate stage first")
    cfg = persona.config.labeling
    rows = read_jsonl(run_dir.variants)
    drops: Counter[str] = Counter()
    items = _screen(rows, drops)

    owns_judge = judge is None
    if judge is None:
        judge = make_judge(cfg.judge, persona, **judge_options(cfg.judge, run_dir))
    log.info("label %s: judging %d of %d pairs with %r (both orders, min margin %.2f)",
             persona.id, len(items), len(rows), judge.name, cfg.reward.min_margin if cfg.judge == "reward" else cfg.min_margin)
    labeled: list[dict[str, Any]] = []
    try:
        progress = Progress(f"label {persona.id}", len(rows) if cfg.judge == "reward" else len(items), unit="pairs", logger=log)
        if cfg.judge == "reward":
            # N candidates per prompt (variant_a, variant_b, variant_c, ...): best vs worst by reward.
            judgements = []
            drops.clear()
            labeled = judge.label_rows(persona, rows, drops, progress=progress)
        else:
            judgements = judge.judge_pairs(persona, items, both_orders=True, progress=progress)
        accounting = judge.accounting()
    finally:
        if owns_judge and hasattr(judge, "close"):
            judge.close()

    by_id = {item.id: item for item in items}
    for j in judgements:
        if j.status != "ok":
            drops[j.status] += 1
            continue
        if j.margin < cfg.min_margin:
            drops["under_margin"] += 1
            continue
        item = by_id[j.id]
        a_wins = j.winner == "a"
        win, lose = (j.scores_a, j.scores_b) if a_wins else (j.scores_b, j.scores_a)
        labeled.append({
            "id": item.id,
            "prompt": item.prompt,
            "chosen": item.response_a if a_wins else item.response_b,
            "rejected": item.response_b if a_wins else item.response_a,
            "chosen_variant": j.winner,
            "margin": round(j.margin, 4),
            "scores_chosen": win.as_dict() if win else None,
            "scores_rejected": lose.as_dict() if lose else None,
            "judge": judge.name,
            "source": "generated",
        })
    labeled = _drop_cut_off_chosen(labeled, rows, drops)
    generated = len(labeled)
    feedback, feedback_bad = _feedback_pairs(run_dir)
    write_jsonl(run_dir.labeled, labeled + feedback)

    chosen = Counter(r["chosen_variant"] for r in labeled)
    summary = {
        "stage": "label",
        "persona": persona.id,
        "judge": judge.name,
        "min_margin": cfg.reward.min_margin if cfg.judge == "reward" else cfg.min_margin,
        "input_pairs": len(rows),
        "judged": len(items),
        "kept": generated,
        "pass_rate": round(generated / len(rows), 4) if rows else 0.0,
        "dropped": {reason: drops.get(reason, 0) for reason in DROP_REASONS},
        "chosen_variant": {"a": chosen.get("a", 0), "b": chosen.get("b", 0)},
        # Kept pairs whose rejected answer was cut off (format drops them rather than close them as finished).
        "rejected_cut_off": sum(bool(r.get("rejected_cut_off")) for r in labeled),
        "feedback_pairs": len(feedback),
        "feedback_pairs_rejected": feedback_bad,
        "total_pairs": generated + len(feedback),
        "accounting": accounting,
        "output": str(run_dir.labeled),
    }
    write_json(run_dir.stage_summary("label"), summary)
    log.info("label %s: kept %d/%d generated pairs (pass rate %.0f%%; A chosen %d, B chosen %d) + %d feedback pairs; dropped %s",
             persona.id, generated, len(rows), 100 * summary["pass_rate"], summary["chosen_variant"]["a"],
             summary["chosen_variant"]["b"], len(feedback), {k: v for k, v in summary["dropped"].items() if v} or "none")
    return summary


def make_parser(command: str = "label") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Judge variants.jsonl into chosen/rejected pairs (labeled.jsonl).")
    add_persona_args(p)
    p.add_argument("--judge", default=None, help="judge to use instead of labeling.judge (rules, groq, ...)")
    p.add_argument("--min-margin", type=float, default=None, help="override labeling.min_margin")
    return p


def main(args: argparse.Namespace) -> int:
    persona = persona_from_args(args)
    overrides = {k: v for k, v in (("judge", args.judge), ("min_margin", args.min_margin)) if v is not None}
    persona = with_overrides(persona, {"labeling": overrides})
    run(persona, args.run_dir)
    return 0
