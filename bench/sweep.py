"""Training hyperparameters on the embedded model: which learning rate, epochs and warmup move the adapter?

Builds one DPO dataset once with the pipeline's own stages (generate -> label -> format, into
`<out>/data`), then trains a grid of (learning rate x epochs x warmup ratio) from the same base
on the same pairs and the same held-out split (train's 10%, chosen by `training.seed`), one run
dir per config under `<out>/configs/`. Per config it reports:

    steps            optimizer steps
    train loss       mean DPO loss over all steps (the trainer's training_loss)
    eval loss        DPO loss on the held-out pairs after the last epoch (0.693 = ln 2 is the
                     untrained adapter: policy = reference)
    eval acc         held-out reward accuracy (share of pairs whose chosen answer gets the higher reward)
    eval margin      held-out mean reward margin (chosen - rejected)
    seconds          wall time of the train stage (model load, reference log-probs, steps, evaluations)
    win rate         DPO vs base by the evaluation judge (checklist by default, never the labeling
                     judge), ties half, Wilson 95% interval; usable answers base / DPO. Only for the
                     `--judge-top` configs with the lowest eval loss (the judge costs minutes each);
                     the base model's answers are generated once and reused.

The dataset's settings are the Makefile's DEMO_SETTINGS with DATASET_SETTINGS on top (longer
answers, more prompts, a lower label margin: at the demo's 96 tokens most chosen answers are cut
off and dropped), then `--set`. Everything already in `--out` is resumed, not redone (`--fresh`
starts over); changed generation settings are refused, as `run` refuses them.

    python bench/sweep.py                                    # the documented sweep
    python bench/sweep.py --lr 1e-4,5e-4 --epochs 2 --warmup 0 --judge-top 0 --json sweep.json
    python bench/sweep.py --config 5e-4:4:0.1                # the default grid plus one config (resumed: only it trains)
    python bench/sweep.py --set generation.num_prompts=8 --lr 5e-4 --epochs 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality import demo_settings, merge_sets  # noqa: E402

# On top of DEMO_SETTINGS: answers long enough that a chosen one is often complete, enough prompts
# for ~20 kept pairs, a label margin of half a point, and sequences that hold a 160-token answer.
# The evaluation keeps the demo's 96-token answers: the judge's cost is the base and each judged
# config answering the 60 cases.
DATASET_SETTINGS = [
    "generation.num_prompts=144", "generation.max_new_tokens=160", "labeling.min_margin=0.5",
    "training.max_length=384", "training.max_prompt_length=128",
]
DATA_STAGES = ("generate", "label", "format")
JSON_FIELDS = ("config", "learning_rate", "epochs", "warmup_ratio", "steps", "train_loss", "eval_loss",
               "eval_reward_accuracy", "eval_reward_margin", "seconds")


def floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {text!r}")
    return values


def config_spec(text: str) -> tuple[float, float, float]:
    try:
        lr, epochs, warmup = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LR:EPOCHS:WARMUP, e.g. 5e-4:2:0.1, got {text!r}") from None
    return lr, epochs, warmup


def config_name(lr: float, epochs: float, warmup: float) -> str:
    return f"lr{lr:g}-ep{epochs:g}-wu{warmup:g}"


def build_dataset(persona: Any, data_dir: Path) -> dict[str, Any]:
    """generate -> label -> format into `data_dir`, each stage skipped when its outputs are complete."""
    from dpo_tasks import pipeline
    from dpo_tasks.runs import RunDir, read_json

    rd = RunDir(data_dir).ensure()
    # The dataset's settings are recorded; a changed generation setting is refused, a changed label one relabels.
    pipeline._check_run_config(rd, {"persona": persona.id, "config": persona.config.model_dump(mode="json"),
                                    "baseline": "base", "max_steps": None})
    rerun = False
    summaries = {}
    for stage in DATA_STAGES:
        if rerun or not pipeline.is_complete(rd, stage):
            rerun = True
            print(f"== dataset: {stage} ({persona.id}) in {data_dir}", flush=True)
            pipeline._module(stage).run(persona, rd)
        summaries[stage] = read_json(rd.stage_summary(stage))
    label = summaries["label"]
    return {
        "run_dir": str(data_dir),
        "prompts": summaries["generate"].get("prompts"),
        "pairs_input": label.get("input_pairs"),
        "pairs_kept": label.get("kept"),
        "feedback_pairs": label.get("feedback_pairs", 0),
        "dropped": label.get("dropped"),
        "records": summaries["format"].get("records"),
        "label_judge": label.get("judge"),
    }


def train_config(persona: Any, run_dir: Path, data: Path) -> dict[str, Any]:
    from dpo_tasks import pipeline, train
    from dpo_tasks.runs import RunDir, read_json

    rd = RunDir(run_dir)
    if pipeline.is_complete(rd, "train"):
        return read_json(rd.stage_summary("train"))
    return train.run(persona, rd, data=data)


def judge_config(persona: Any, run_dir: Path, base_answers: Path) -> dict[str, Any]:
    """evaluate vs the base model, reusing the base model's answers from `base_answers` (and saving them there)."""
    from dpo_tasks import evaluate, pipeline
    from dpo_tasks.runs import RunDir, read_json, read_jsonl, write_jsonl

    rd = RunDir(run_dir)
    if pipeline.is_complete(rd, "evaluate"):
        return read_json(rd.stage_summary("evaluate"))
    responses = rd.eval / "responses.jsonl"
    if base_answers.exists():
        rd.eval.mkdir(parents=True, exist_ok=True)
        mine = {r["key"] for r in read_jsonl(responses, tolerate_torn_tail=True)} if responses.exists() else set()
        with responses.open("a") as f:
            for r in read_jsonl(base_answers):
                if r["key"] not in mine:
                    f.write(json.dumps(r) + "\n")
    summary = evaluate.run(persona, rd, baseline="base")
    if not base_answers.exists():
        write_jsonl(base_answers, [r for r in read_jsonl(responses) if r.get("role") == "baseline"])
    return summary


def row_for(name: str, lr: float, epochs: float, warmup: float, train: dict[str, Any], ev: dict[str, Any] | None) -> dict[str, Any]:
    ev = ev or {}
    usable = ev.get("usable_rate") or {}
    return {
        "config": name, "learning_rate": lr, "epochs": epochs, "warmup_ratio": warmup,
        "steps": train.get("steps"),
        "train_loss": train.get("train_loss"),
        "last_epoch_loss": train.get("loss"),
        "eval_loss": train.get("eval_loss"),
        "eval_reward_accuracy": train.get("eval_reward_accuracy"),
        "eval_reward_margin": train.get("eval_reward_margin"),
        "train_pairs": train.get("train_pairs"),
        "eval_pairs": train.get("eval_pairs"),
        "seconds": round((train.get("prepare_seconds") or 0) + (train.get("train_seconds") or 0), 1),
        "win_rate": ev.get("win_rate"), "ci_low": ev.get("ci_low"), "ci_high": ev.get("ci_high"),
        "usable_rate_base": usable.get("baseline"), "usable_rate_dpo": usable.get("candidate"),
        "eval_judge": ev.get("eval_judge") or ev.get("judge"),
        "n": ev.get("n"),
    }


def _f(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def table(rows: list[dict[str, Any]], dataset: dict[str, Any]) -> str:
    head = (f"{'config':<22} {'lr':>7} {'epochs':>6} {'warmup':>6} {'steps':>5} {'train loss':>10} {'eval loss':>9} "
            f"{'eval acc':>8} {'eval margin':>11} {'seconds':>7} {'win rate [95% CI]':>21} {'usable base/DPO':>15}")
    lines = [head, "-" * len(head)]
    for r in rows:
        win = "-" if r["win_rate"] is None else f"{_f(r['win_rate'])} [{_f(r['ci_low'])}-{_f(r['ci_high'])}]"
        usable = "-" if r["win_rate"] is None else f"{_f(r['usable_rate_base'], '.2f')}/{_f(r['usable_rate_dpo'], '.2f')}"
        lines.append(
            f"{r['config']:<22} {r['learning_rate']:>7g} {r['epochs']:>6g} {r['warmup_ratio']:>6g} {_f(r['steps'], 'd'):>5} "
            f"{_f(r['train_loss']):>10} {_f(r['eval_loss']):>9} {_f(r['eval_reward_accuracy'], '.2f'):>8} "
            f"{_f(r['eval_reward_margin']):>11} {_f(r['seconds'], '.0f'):>7} {win:>21} {usable:>15}"
        )
    first = rows[0] if rows else {}
    judges = {r["eval_judge"] for r in rows if r["eval_judge"]}
    lines.append(
        f"dataset: {dataset.get('records')} DPO records: {dataset.get('pairs_kept')} pairs kept of {dataset.get('pairs_input')} "
        f"({dataset.get('label_judge')} judge; dropped {json.dumps({k: v for k, v in sorted((dataset.get('dropped') or {}).items()) if v})}) + "
        f"{dataset.get('feedback_pairs')} feedback pairs; {first.get('train_pairs')} trained on, "
        f"{first.get('eval_pairs')} held out; eval loss of the untrained adapter: 0.693 (ln 2)"
        + (f"; win rate by the {', '.join(sorted(judges))} judge over {first.get('n') or rows[-1].get('n')} cases" if judges else "")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from dpo_tasks.cli import parse_overrides, setup_logging
    from dpo_tasks.config import DEFAULT_PERSONA, load_persona, with_overrides

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--persona", default=DEFAULT_PERSONA)
    parser.add_argument("--lr", type=floats, default=[5e-5, 5e-4, 2e-3], help="learning rates (default: %(default)s)")
    parser.add_argument("--epochs", type=floats, default=[2, 4], help="epochs (default: %(default)s)")
    parser.add_argument("--warmup", type=floats, default=[0.0], help="warmup ratios (default: %(default)s)")
    parser.add_argument("--config", dest="extra", type=config_spec, action="append", default=[], metavar="LR:EPOCHS:WARMUP",
                        help="one more config besides the grid, e.g. the best one with warmup (repeatable)")
    parser.add_argument("--judge-top", type=int, default=2, help="judge the N configs with the lowest eval loss vs base (default 2; 0: none)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a dataset or training setting, after DEMO_SETTINGS and DATASET_SETTINGS (repeatable)")
    parser.add_argument("--out", default="runs/sweep", help="dataset, runs and base answers go here (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first")
    parser.add_argument("--json", dest="json_file", help="also write the dataset and the rows as JSON to this file")
    args = parser.parse_args(argv)

    setup_logging()
    settings = merge_sets(demo_settings(), DATASET_SETTINGS + args.sets)
    sets = settings[1::2]
    persona = with_overrides(load_persona(args.persona), parse_overrides(sets))
    out = Path(args.out)
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    start = time.monotonic()
    dataset = build_dataset(persona, out / "data")
    print(f"dataset: {dataset['records']} DPO records ({dataset['pairs_kept']} pairs kept of {dataset['pairs_input']}) in {out / 'data'}",
          flush=True)

    grid = [(lr, ep, wu) for wu in args.warmup for ep in args.epochs for lr in args.lr]
    grid += [c for c in args.extra if c not in grid]
    trained = {}
    for lr, ep, wu in grid:
        name = config_name(lr, ep, wu)
        cfg = with_overrides(persona, {"training": {"learning_rate": lr, "epochs": ep, "warmup_ratio": wu}})
        print(f"== train {name}", flush=True)
        trained[name] = (lr, ep, wu, cfg, train_config(cfg, out / "configs" / name, out / "data" / "dpo.jsonl"))

    ranked = sorted((n for n in trained if trained[n][4].get("eval_loss") is not None), key=lambda n: trained[n][4]["eval_loss"])
    judged = {}
    for name in ranked[: max(0, args.judge_top)]:
        print(f"== judge {name} vs base ({trained[name][3].config.evaluation.judge} judge)", flush=True)
        judged[name] = judge_config(trained[name][3], out / "configs" / name, out / "base_answers.jsonl")

    rows = [row_for(name, lr, ep, wu, summary, judged.get(name)) for name, (lr, ep, wu, _, summary) in trained.items()]
    print()
    print(f"persona {persona.id}, model {persona.config.model.base}, settings: DEMO_SETTINGS + {' '.join(DATASET_SETTINGS + args.sets)}; "
          f"{time.monotonic() - start:.0f} s this invocation")
    print(table(rows, dataset))
    if args.json_file:
        Path(args.json_file).write_text(json.dumps({"persona": persona.id, "settings": sets, "dataset": dataset, "rows": rows}, indent=2) + "\n")
        print(f"rows -> {args.json_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
