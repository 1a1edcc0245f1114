"""Command `run`: every stage in order for one persona, resuming where a previous run stopped.

    generate -> label -> format -> sft -> train -> evaluate -> gate -> publish

`sft` trains only with `sft.enabled` (off by default; otherwise it writes a summary saying it
was skipped, and train starts from the configured model as before).

Each stage is called through its own `run(persona, run_dir, ...)`, the same
entry point Airflow, the trainer pod and DVC use. A stage whose outputs are
complete (its summary in `summaries/` and its output files present) is skipped;
once a stage runs, every later stage runs again, since its inputs changed.
Publish runs only when the gate says promote. The settings a run dir was
started with are kept in `run_config.json`. Resuming it with changed settings
reruns from the first stage they affect (a new gate threshold reruns gate and
publish; new training settings rerun format onwards); changed model or
generation settings are refused (start a new run dir). Either way a run's
artifacts come from one configuration.

Writes `run_summary.json` (every stage's summary and timing) and prints a
readable summary: prompts, pairs kept, train loss and reward accuracy, win rate
vs the baseline with its 95% interval, the gate's decision, where the version
was published and where the HTML report is, ending with the MLflow tracking URI
and run id (`dpo_tasks.tracking`: one MLflow run per pipeline run).

Usage:
    python -m dpo_tasks run --persona persona_e_mexican_vegan --run-dir runs/demo \\
        [--set generation.num_prompts=40 ...] [--baseline base|latest] [--store DIR|gs://...]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time
from pathlib import Path
from typing import Any, Callable

from dpo_tasks.config import ConfigError, Persona
from dpo_tasks.runs import RunDir, read_json, write_json
from dpo_tasks.stats import describe_judged

log = logging.getLogger(__name__)

STAGES = ("generate", "label", "format", "sft", "train", "evaluate", "gate", "publish")


def _outputs(rd: RunDir) -> dict[str, list[Path]]:
    return {
        "generate": [rd.prompts, rd.variants],
        "label": [rd.labeled],
        "format": [rd.dpo],
        "sft": [],  # the adapter only when it trained: see is_complete
        "train": [rd.adapter / "adapter_config.json", rd.train / "metrics.json"],
        "evaluate": [rd.eval / "summary_stats.json", rd.eval / "detailed_results.json", rd.eval / "evaluation_report.html"],
        "gate": [rd.gate],
        "publish": [rd.publish],
    }


def is_complete(rd: RunDir, stage: str) -> bool:
    if stage == "sft":
        from dpo_tasks.sft import is_done

        return is_done(rd)
    return rd.stage_summary(stage).is_file() and all(p.exists() for p in _outputs(rd)[stage])


# Which stage a setting first affects; None: it does not change a run's artifacts.
_FIRST_AFFECTED: dict[str, str | None] = {
    "persona": "generate",
    "config.model": "generate",
    "config.generation": "generate",
    "config.labeling": "label",
    "config.training": "format",  # format counts records over training.max_length
    "config.sft": "sft",
    "config.evaluation": "evaluate",
    "config.gate": "gate",
    "config.schedule": None,
    "config.feedback": None,
    "baseline": "evaluate",
    "max_steps": "sft",
}


def _affected_stage(path: str) -> str | None:
    parts = path.split(".")
    key = ".".join(parts[:2]) if parts[0] == "config" else parts[0]
    return _FIRST_AFFECTED.get(key, "generate")


def _check_run_config(rd: RunDir, settings: dict[str, Any]) -> None:
    """Record the run's settings; on a resume with changed settings, rerun from the first stage they affect.

    Changes to what generation produced (model, generation settings) are refused: the
    prompts and variants on disk would silently mix two configurations.
    """
    path = rd.root / "run_config.json"
    if not path.exists():
        write_json(path, settings)
        return
    before = read_json(path)
    if isinstance(before.get("config"), dict) and "sft" not in before["config"] and not settings["config"]["sft"]["enabled"]:
        # A run dir from before the sft stage existed ran without SFT: what sft.enabled=false means.
        before["config"]["sft"] = settings["config"]["sft"]
    diffs = _diff(before, settings)
    if not diffs:
        return
    stages = {_affected_stage(path_) for path_, _ in diffs} - {None}
    described = "; ".join(text for _, text in diffs[:8])
    if "generate" in stages:
        raise ConfigError(
            f"run dir {str(rd.root)!r} was started with different generation settings ({described}); "
            "resume it with the same settings, or use a new --run-dir"
        )
    if stages:
        first = min(stages, key=STAGES.index)
        log.warning("settings changed since this run dir was started (%s): rerunning from %s", described, first)
        for stage in STAGES[STAGES.index(first):]:
            rd.stage_summary(stage).unlink(missing_ok=True)
    write_json(path, settings)


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, "path: old -> new") for every leaf that differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    path = prefix.rstrip(".")
    return [] if a == b else [(path, f"{path}: {a!r} -> {b!r}")]


def run(
    persona: Persona,
    run_dir: str | Path | RunDir,
    *,
    baseline: str = "base",
    store_uri: str | None = None,
    dry_run: bool = False,
    max_steps: int | None = None,
) -> dict[str, Any]:
    rd = (run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)).ensure()
    _check_run_config(rd, {"persona": persona.id, "config": persona.config.model_dump(mode="json"),
                         "baseline": baseline, "max_steps": max_steps})
    calls: dict[str, Callable[[], dict[str, Any]]] = {
        "sft": lambda: _module("sft").run(persona, rd, max_steps=max_steps),
        "train": lambda: _module("train").run(persona, rd, max_steps=max_steps),
        "evaluate": lambda: _module("evaluate").run(persona, rd, baseline=baseline, store_uri=store_uri),
        "publish": lambda: _module("publish").run(persona, rd, store_uri=store_uri, dry_run=dry_run),
    }
    from dpo_tasks.tracking import RunTracker

    tracker = RunTracker(rd, persona=persona)
    stages: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    rerun_rest = False
    started = time.monotonic()
    for stage in STAGES:
        if stage == "publish" and stages["gate"].get("decision") != "promote":
            stages[stage] = {"skipped": True, "reason": f"gate: {stages['gate'].get('reason')}"}
            log.info("publish skipped: the gate rejected the candidate (%s)", stages["gate"].get("reason"))
            break
        if not rerun_rest and is_complete(rd, stage):
            stages[stage] = read_json(rd.stage_summary(stage)) | {"resumed": True}
            log.info("%s: outputs complete in %s, skipped", stage, rd.root)
            continue
        if stage == "sft" and not persona.config.sft.enabled:
            # It only records that it is off: what follows needs no rerun for it (a run dir from
            # before the stage existed resumes as it was).
            t0 = time.monotonic()
            stages[stage] = _module("sft").run(persona, rd)
            timings[stage] = round(time.monotonic() - t0, 1)
            continue
        rerun_rest = True
        log.info("== %s (%s)", stage, persona.id)
        t0 = time.monotonic()
        stages[stage] = calls[stage]() if stage in calls else _module(stage).run(persona, rd)
        timings[stage] = round(time.monotonic() - t0, 1)
        if stage != "publish":  # publish logs itself (and registers the version before LATEST moves)
            tracker.log_stage(stage)
    # Stages finished by an earlier invocation that could not reach MLflow, then this run's pending ones.
    tracker.log_new()
    tracking = tracker.finish()
    summary = {
        "persona": persona.id,
        "run_dir": str(rd.root),
        "baseline": baseline,
        "stages": stages,
        "seconds": timings,
        "total_seconds": round(time.monotonic() - started, 1),
        "tracking": tracking,
    }
    write_json(rd.summary, summary)
    return summary


def _module(stage: str) -> Any:
    return importlib.import_module(f"dpo_tasks.{stage}")


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def format_summary(summary: dict[str, Any]) -> str:
    s = summary["stages"]
    gen, lab, fmt, sft, train, ev, gate, pub = (s.get(k, {}) for k in STAGES)
    secs = summary.get("seconds", {})

    def t(stage: str) -> str:
        return f"{secs[stage]:7.1f}s" if stage in secs else "  resumed" if s.get(stage, {}).get("resumed") else ""

    lines = [
        f"Persona DPO run: {summary['persona']} in {summary['run_dir']} ({summary['total_seconds']:.0f}s this invocation)",
        f"  generate  {t('generate')}  {gen.get('prompts')} prompts ({gen.get('feedback_prompts', 0)} from feedback), two variants each",
        f"  label     {t('label')}  {lab.get('kept')} pairs kept of {lab.get('input_pairs')} (pass rate {_fmt(lab.get('pass_rate'), '.0%')}; "
        f"judge {lab.get('judge')}) + {lab.get('feedback_pairs', 0)} feedback pairs",
        f"  format    {t('format')}  {fmt.get('records')} DPO records in ChatML ({fmt.get('skipped')} skipped, "
        f"{fmt.get('cut_off', 0)} with a cut-off chosen answer; {fmt.get('rejected_cut_off', 0)} kept with a cut-off rejected one)",
        f"  sft       {t('sft')}  " + ("n/a" if not sft else f"skipped ({sft.get('reason')})" if sft.get("skipped") else
            f"{sft.get('examples')} strong-prompt answers of {sft.get('labeled_pairs')} labeled pairs "
            f"(skipped {', '.join(f'{k} {v}' for k, v in (sft.get('skipped_examples') or {}).items() if v) or 'none'}), "
            f"{sft.get('steps')} steps, loss {_fmt(sft.get('first_loss'))} -> {_fmt(sft.get('final_loss'))}"),
        f"  train     {t('train')}  {train.get('pairs')} pairs, {train.get('steps')} steps"
        f"{' from the sft adapter' if train.get('started_from') == 'sft stage adapter' else ''}: loss {_fmt(train.get('train_loss'))}; "
        f"last epoch: reward accuracy {_fmt(train.get('reward_accuracy'), '.2f')}, margin {_fmt(train.get('reward_margin'))}; "
        f"held out ({train.get('eval_pairs', 0)} pairs): loss {_fmt(train.get('eval_loss'))}, "
        f"reward accuracy {_fmt(train.get('eval_reward_accuracy'), '.2f')}",
        f"  evaluate  {t('evaluate')}  win rate {_fmt(ev.get('win_rate'))} vs {(ev.get('baseline') or {}).get('label')} "
        f"(95% CI {_fmt(ev.get('ci_low'))}-{_fmt(ev.get('ci_high'))}) over {describe_judged(ev) if ev else 'n/a'}: "
        f"{ev.get('wins')} wins, {ev.get('ties')} ties, {ev.get('losses')} losses ({ev.get('judge')} judge, labels by "
        f"{ev.get('label_judge')}{': THE SAME JUDGE' if ev.get('same_judge') else ''})",
        f"  {'':>21}usable answers {_fmt((ev.get('usable_rate') or {}).get('candidate'), '.0%')} DPO vs "
        f"{_fmt((ev.get('usable_rate') or {}).get('baseline'), '.0%')} baseline; cut off "
        f"{_fmt((ev.get('truncation_rate') or {}).get('candidate'), '.0%')} vs {_fmt((ev.get('truncation_rate') or {}).get('baseline'), '.0%')}",
        f"  gate      {t('gate')}  {str(gate.get('decision')).upper()}: {gate.get('reason')}",
    ]
    if pub.get("skipped"):
        lines.append(f"  publish   {'':>8}  skipped ({pub.get('reason')})")
    elif pub.get("published"):
        moved = "LATEST now points at it" if pub.get("latest_moved") else f"LATEST unchanged (dry run, still {pub.get('previous')})"
        lines.append(f"  publish   {t('publish')}  {pub.get('version')} -> {pub.get('uri')} ({moved})")
    if ev.get("report"):
        lines.append(f"  report: {ev['report']}")
    tracking = summary.get("tracking") or {}
    if tracking.get("run_id"):
        pending = f" (not logged yet: {', '.join(tracking['pending'])})" if tracking.get("pending") else ""
        lines.append(f"  tracking: {tracking['tracking_uri']} run {tracking['run_id']}{pending}")
    return "\n".join(lines)


def make_parser(command: str = "run") -> argparse.ArgumentParser:
    from dpo_tasks.cli import add_persona_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_persona_args(parser)
    parser.add_argument("--baseline", default="base", help="evaluation baseline: base, latest, or an adapter dir (default: %(default)s)")
    parser.add_argument("--store", default=None, help="store URI (default: $PERSONA_DPO_STORE or ./store)")
    parser.add_argument("--dry-run", action="store_true", help="publish the version but do not move LATEST")
    parser.add_argument("--max-steps", type=int, default=None, help="cap the training steps (smoke runs)")
    return parser


def main(args: argparse.Namespace) -> int:
    from dpo_tasks.cli import persona_from_args

    summary = run(persona_from_args(args), args.run_dir, baseline=args.baseline, store_uri=args.store, dry_run=args.dry_run,
                  max_steps=args.max_steps)
    print(format_summary(summary))
    return 0
