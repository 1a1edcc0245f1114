"""Stage `sft` (optional, `sft.enabled`): supervised fine-tuning on the run's best strong-prompt answers, before DPO.

    python -m dpo_tasks sft --persona persona_e_mexican_vegan --run-dir runs/demo --set sft.enabled=true

The reference pipeline started DPO from an SFT adapter; this stage makes one from the run's own
data. TRL's `SFTTrainer` trains a LoRA adapter (the LoRA shape of `training.*`; on top of
`model.sft_adapter` when one is configured, continuing it) on chat examples

    system: the persona's serving system prompt   user: the request   assistant: the answer

where the answers are the labeled pairs' chosen answers that
- came from the strong variant (`chosen_variant: a`, the system prompt with every persona constraint),
- were not cut off at `generation.max_new_tokens` (label already drops those pairs; checked again),
- are the best the labeling judge scored: ranked by the chosen answer's overall score (then the
  pair's margin), the first `sft.max_examples` kept.
Trained under the serving prompt, the adapter learns to answer the plain prompt the way the
strong prompt made the base answer (prompt distillation). Loss is on the answer tokens only.

Skipped, and counted by reason in the summary: `weak_variant` (the generic prompt's answer won),
`feedback` (user pairs: not a strong-prompt answer), `cut_off`, `empty`, `under_min_score` (the
chosen answer's overall score is below `sft.min_score`, when set), `over_max_length`
(prompt + answer over `sft.max_length` tokens: cutting would teach stopping mid-recipe) and
`over_max_examples`. No usable example with `sft.enabled` is a ConfigError: the run asked for
SFT + DPO and would otherwise silently be plain DPO.

`train` then continues this adapter (the path `model.sft_adapter` takes: the DPO reference is
the SFT model). Evaluation's `base` baseline stays the model the run started from (base +
configured `model.sft_adapter`), so the win rate measures SFT + DPO against the current model.

Disabled (the default), the stage trains nothing: it writes a summary (and `sft/metrics.json`)
saying so, and train starts from the configured model exactly as without this stage.

Output, under `<run_dir>/sft/`: `adapter/`, `sft.jsonl` (the examples as trained, with their
id and score), `metrics.json` (per-step loss, the skipped examples and why).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dpo_tasks.config import ConfigError, Persona
from dpo_tasks.runs import RunDir, read_json, read_jsonl, save_trained_adapter, sha256_file, trainer_progress_callback, write_json, write_jsonl

log = logging.getLogger(__name__)

SKIP_REASONS = ("weak_variant", "feedback", "cut_off", "empty", "under_min_score", "over_max_length", "over_max_examples")


def _score(row: dict[str, Any]) -> float:
    scores = row.get("scores_chosen")
    overall = scores.get("overall") if isinstance(scores, dict) else None
    return float(overall) if isinstance(overall, (int, float)) and not isinstance(overall, bool) else float("-inf")


def select_examples(persona: Persona, rows: list[dict[str, Any]], tokenizer: Any) -> tuple[list[dict[str, Any]], Counter]:
    """(examples, skipped by reason): the strong variant's uncut chosen answers, best-scored first.

    Each example: `{id, prompt, completion, score, margin}`, prompt rendered with the chat template
    and the serving system prompt, completion closed by one end-of-turn token (what `format` writes
    for DPO, so SFT and DPO see the same tokens).
    """
    from dpo_tasks.format import end_of_turn, render_completion, render_prompt
    from dpo_tasks.prompts import system_prompt

    cfg = persona.config.sft
    eot = end_of_turn(tokenizer)
    serving = system_prompt(persona, "serving")
    skipped: Counter[str] = Counter()
    candidates = []
    for row in rows:
        if row.get("source", "generated") != "generated":
            skipped["feedback"] += 1
        elif row.get("chosen_variant") != "a":
            skipped["weak_variant"] += 1
        elif row.get("chosen_cut_off"):
            skipped["cut_off"] += 1
        elif not isinstance(row.get("chosen"), str) or not isinstance(row.get("prompt"), str) or not row["chosen"].strip():
            skipped["empty"] += 1
        elif cfg.min_score is not None and _score(row) < cfg.min_score:
            skipped["under_min_score"] += 1
        else:
            candidates.append(row)
    # Best first; the margin breaks ties (a clearer win over the generic answer), then the id (stable).
    candidates.sort(key=lambda r: (-_score(r), -float(r.get("margin") or 0), str(r.get("id"))))
    examples = []
    for row in candidates:
        completion = render_completion(row["chosen"], eot)
        if completion == eot:
            skipped["empty"] += 1
            continue
        prompt = render_prompt(tokenizer, serving, row["prompt"])
        n_tokens = len(tokenizer(prompt + completion, add_special_tokens=False)["input_ids"])
        if n_tokens > cfg.max_length:
            skipped["over_max_length"] += 1
            continue
        if len(examples) >= cfg.max_examples:
            skipped["over_max_examples"] += 1
            continue
        score = _score(row)
        examples.append({"id": row.get("id"), "prompt": prompt, "completion": completion,
                         "score": None if score == float("-inf") else score, "margin": row.get("margin"), "tokens": n_tokens})
    return examples, skipped


def trained_adapter(persona: Persona, rd: RunDir) -> str | None:
    """The adapter `train` starts DPO from: this run's SFT adapter when `sft.enabled`, else None
    (then `model.sft_adapter`, if configured, as before). ConfigError when SFT is on but has not run."""
    if not persona.config.sft.enabled:
        return None
    if (rd.sft_adapter / "adapter_config.json").is_file():
        return str(rd.sft_adapter)
    raise ConfigError(
        f"sft.enabled is true but {str(rd.sft_adapter)!r} holds no SFT adapter: run the sft stage first "
        "(or set sft.enabled=false to train DPO from the configured model)"
    )


def build_trainer(persona: Persona, examples: list[dict[str, Any]], output_dir: str | Path, *, max_steps: int | None = None,
                  device: str | None = None) -> Any:
    """A ready `SFTTrainer` on `examples` ({prompt, completion} already rendered)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from dpo_tasks.models import default_device, load_policy, trainer_optimizer

    cfg, tc, mc = persona.config.sft, persona.config.training, persona.config.model
    device = device or default_device()
    cuda = device.startswith("cuda")
    model, tokenizer = load_policy(
        mc.base, mc.sft_adapter, trainable=mc.sft_adapter is not None, device=device, quantization=tc.quantization,
        revision=mc.revision,
    )
    optim = trainer_optimizer(cuda)
    args = SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=max_steps if max_steps else -1,
        # Longer examples were skipped by select_examples; nothing is cut here.
        max_length=cfg.max_length,
        # Loss on the answer only: the system prompt and the request are given, not learned.
        completion_only_loss=True,
        packing=False,
        seed=tc.seed,
        data_seed=tc.seed,
        bf16=cuda,
        fp16=False,
        use_cpu=not cuda,
        optim=optim,
        activation_checkpointing=cuda,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    peft_config = None
    if mc.sft_adapter is None:
        peft_config = LoraConfig(r=tc.lora_r, lora_alpha=tc.lora_alpha, lora_dropout=tc.lora_dropout,
                                 target_modules=list(tc.target_modules), task_type="CAUSAL_LM")
    rows = [{"prompt": e["prompt"], "completion": e["completion"]} for e in examples]
    return SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=peft_config, callbacks=[trainer_progress_callback(f"sft {persona.id}", logger=log)],
    )


def run(persona: Persona, run_dir: str | Path | RunDir, *, max_steps: int | None = None) -> dict[str, Any]:
    rd = (run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)).ensure()
    cfg, mc = persona.config.sft, persona.config.model
    if not cfg.enabled:
        summary = {"stage": "sft", "persona": persona.id, "skipped": True,
                   "reason": "sft.enabled is false: DPO starts from the configured model"}
        # sft/ says so too (DVC's output), and holds no adapter of an earlier run with SFT on.
        shutil.rmtree(rd.sft, ignore_errors=True)
        write_json(rd.sft / "metrics.json", {"summary": summary})
        write_json(rd.stage_summary("sft"), summary)
        log.info("sft %s: disabled (sft.enabled is false); nothing trained", persona.id)
        return summary

    from dpo_tasks.models import check_quantization, default_device, load_tokenizer

    check_quantization(persona.config.training.quantization, default_device())
    if not rd.labeled.exists():
        raise ConfigError(f"sft: {str(rd.labeled)!r} not found: run the label stage first (SFT learns from its chosen answers)")
    rows = read_jsonl(rd.labeled)
    examples, skipped = select_examples(persona, rows, load_tokenizer(mc.base, mc.revision))
    skipped_all = {reason: skipped.get(reason, 0) for reason in SKIP_REASONS}
    if not examples:
        raise ConfigError(
            f"sft: no usable example among {len(rows)} labeled pairs in {str(rd.labeled)!r} (skipped: "
            f"{ {k: v for k, v in skipped_all.items() if v} or 'none'}); SFT needs chosen answers from the strong "
            "variant that were not cut off. Set sft.enabled=false to train DPO alone."
        )
    log.info("sft %s: %d examples from %d labeled pairs (skipped %s)", persona.id, len(examples), len(rows),
             {k: v for k, v in skipped_all.items() if v} or "none")

    rd.sft.mkdir(parents=True, exist_ok=True)
    write_jsonl(rd.sft / "sft.jsonl", examples)
    start = time.monotonic()
    trainer = build_trainer(persona, examples, rd.sft / "trainer", max_steps=max_steps)
    prepare_s = time.monotonic() - start
    result = trainer.train()
    train_s = time.monotonic() - start - prepare_s

    # Only the trained adapter, atomically: train must never start from half an adapter.
    save_trained_adapter(trainer, mc.base, rd.sft_adapter, rd.sft / "trainer")

    steps = [dict(e) for e in trainer.state.log_history if "loss" in e and "train_runtime" not in e]
    scores = [e["score"] for e in examples if e["score"] is not None]
    summary = {
        "stage": "sft",
        "persona": persona.id,
        "skipped": False,
        "labeled_pairs": len(rows),
        "examples": len(examples),
        "skipped_examples": skipped_all,
        "score_min": min(scores) if scores else None,
        "score_mean": round(sum(scores) / len(scores), 4) if scores else None,
        "started_from": "base + model.sft_adapter" if mc.sft_adapter else "base",
        "steps": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0), 3),
        "train_loss": result.training_loss,
        "first_loss": steps[0].get("loss") if steps else None,
        "final_loss": steps[-1].get("loss") if steps else None,
        "prepare_seconds": round(prepare_s, 2),
        "train_seconds": round(train_s, 2),
        "device": str(trainer.args.device),
        "adapter": str(rd.sft_adapter),
        "data_sha256": sha256_file(rd.sft / "sft.jsonl"),
    }
    write_json(rd.sft / "metrics.json", {"steps": steps, "summary": summary, "config": cfg.model_dump(mode="json")})
    write_json(rd.stage_summary("sft"), summary)
    log.info("sft %s: %d examples, %d steps, loss %.4f -> %s", persona.id, len(examples), summary["steps"],
             summary["train_loss"], rd.sft_adapter)
    return summary


def is_done(rd: RunDir) -> bool:
    """The stage's outputs are complete: a summary, and the adapter unless the stage was skipped."""
    path = rd.stage_summary("sft")
    if not path.is_file():
        return False
    return bool(read_json(path).get("skipped")) or (rd.sft_adapter / "adapter_config.json").is_file()


def make_parser(command: str = "sft") -> argparse.ArgumentParser:
    from dpo_tasks.cli import add_max_steps_arg, add_persona_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_persona_args(parser)
    add_max_steps_arg(parser, "stop after this many optimizer steps (tests)")
    return parser


def main(args: argparse.Namespace) -> int:
    from dpo_tasks.cli import persona_from_args

    summary = run(persona_from_args(args), args.run_dir, max_steps=args.max_steps)
    if summary.get("skipped"):
        print(f"sft: skipped ({summary['reason']})")
    else:
        print(f"sft: {summary['examples']} examples of {summary['labeled_pairs']} labeled pairs, {summary['steps']} steps, "
              f"loss {summary['train_loss']:.4f} -> {summary['adapter']}")
    return 0
