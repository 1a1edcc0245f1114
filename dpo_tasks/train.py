"""Stage `train`: DPO with TRL's `DPOTrainer` on a LoRA adapter (PEFT), configured by `training.*`.

Input: `dpo.jsonl` of the run (or `--data FILE`, JSONL or a JSON list), records
`{prompt, chosen, rejected}` where prompt is already rendered with the chat
template and each completion ends with the end-of-turn token (what `format`
writes). Bad records are reported with their line and skipped.

Output, under `<run_dir>/train/`:
    adapter/       the LoRA adapter (adapter_config.json + adapter_model.safetensors)
    config.yaml    the effective configuration: training knobs, LoRA, device, precision, data hash
    metrics.json   one entry per logged step (loss, rewards/accuracies, rewards/margins, ...), the
                   held-out evaluations, per-epoch means and the summary

Held-out pairs: with 10 or more pairs, 10% of them (at least 1; chosen by
`training.seed`) are not trained on; after every epoch the trainer reports their
DPO loss and reward accuracy (`eval_loss`, `eval_reward_accuracy` in the
summary: the last evaluation). A reward accuracy on pairs the adapter has seen
measures memory, on held-out ones it measures what was learned. The summary's
`loss`, `reward_accuracy` and `reward_margin` are means over the last epoch's
steps (`epoch_means` has every epoch), not one step's values.

The reference model:
- no `model.sft_adapter`: a new LoRA adapter (r, alpha, dropout, target_modules
  from the config) on the base; the reference is the base (adapter disabled).
- `model.sft_adapter` set: training CONTINUES that adapter (its own LoRA shape),
  and the reference is the SFT policy (base + SFT adapter), which TRL keeps as a
  frozen copy of the adapter named "ref".
- `sft.enabled`: the same, with the adapter the run's `sft` stage trained
  (`<run_dir>/sft/adapter`, itself on top of `model.sft_adapter` when one is set).
With `training.precompute_ref_log_probs` (default) the reference log-probs are
computed once before training instead of at every step.

CUDA: bf16, paged 8-bit AdamW (bitsandbytes) and gradient checkpointing;
`training.quantization: 4bit` loads the frozen base in NF4 (QLoRA).
CPU: float32 and plain AdamW; 4-bit is refused before anything is loaded.

Usage:
    python -m dpo_tasks train --persona persona_e_mexican_vegan --run-dir runs/demo
    python -m dpo_tasks train ... --data community.jsonl --max-steps 20 --set training.learning_rate=1e-4
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

from dpo_tasks.config import ConfigError, Persona
from dpo_tasks.runs import RunDir, save_trained_adapter, sha256_file, trainer_progress_callback, write_json

log = logging.getLogger(__name__)

# What the progress line shows of each logged step, in order.
_STEP_KEYS = ("loss", "rewards/accuracies", "rewards/margins")
HOLDOUT_FRACTION = 0.1
HOLDOUT_MIN_PAIRS = 10


def split_holdout(rows: list[dict[str, str]], seed: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train, held out): 10% held out, at least one, once there are HOLDOUT_MIN_PAIRS pairs; none below."""
    if len(rows) < HOLDOUT_MIN_PAIRS:
        return rows, []
    n_eval = max(1, int(len(rows) * HOLDOUT_FRACTION))
    held = set(random.Random(seed).sample(range(len(rows)), n_eval))
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def epoch_means(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean loss, reward accuracy and margin of each epoch's logged steps (a step at epoch 1.0 closes epoch 1)."""
    by_epoch: dict[int, list[dict[str, Any]]] = {}
    for step in steps:
        epoch = max(1, math.ceil(float(step.get("epoch") or 0) - 1e-9))
        by_epoch.setdefault(epoch, []).append(step)

    def mean(entries: list[dict[str, Any]], key: str) -> float | None:
        values = [e[key] for e in entries if isinstance(e.get(key), (int, float))]
        return round(sum(values) / len(values), 6) if values else None

    return [
        {"epoch": epoch, "steps": len(entries), "loss": mean(entries, "loss"),
         "reward_accuracy": mean(entries, "rewards/accuracies"), "reward_margin": mean(entries, "rewards/margins")}
        for epoch, entries in sorted(by_epoch.items())
    ]


def load_dataset_rows(path: str | Path, tokenizer: Any, persona: Persona) -> tuple[list[dict[str, str]], list[str]]:
    """The usable `{prompt, chosen, rejected}` rows and a message per skipped row.

    Plain-text records (a community's upload, `toy-data`) are rendered the way
    `format` renders pairs: serving system prompt + request through the chat
    template, completions closed by the end-of-turn token.

    TRL 1.16 has no prompt-length limit of its own; a prompt over
    `training.max_prompt_length` tokens is skipped (and reported) rather than
    cut, since cutting a chat prompt loses its system prompt or its request.
    """
    from dpo_tasks.format import end_of_turn, render_completion, render_prompt
    from dpo_tasks.prompts import system_prompt
    from dpo_tasks.validate import is_chatml, load_records, validate_records

    max_prompt_length = persona.config.training.max_prompt_length

    records, where, parse_problems = load_records(path)
    result = validate_records(records, where=where)
    skipped = [str(p) for p in parse_problems + result.problems]
    # TRL tokenizes string prompts with the tokenizer's special tokens; the rendered chat
    # template already starts with BOS where the model wants one (Llama 3), so drop the text one.
    adds_bos = tokenizer.bos_token_id is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    eot = end_of_turn(tokenizer)
    serving = system_prompt(persona, "serving")
    # What every rendered prompt ends with: the end of the user turn and the generation prompt.
    probe = render_prompt(tokenizer, "s", "u")
    rendered_suffix = probe[probe.rindex("u") + 1 :]
    rows = []
    for loc, rec in zip(result.good_where, result.good):
        if is_chatml(rec) and not rec["prompt"].endswith(rendered_suffix):
            skipped.append(f"{loc}: prompt is in ChatML but does not end with this model's generation prompt {rendered_suffix!r}")
            continue
        if not rec["prompt"].endswith(rendered_suffix):
            rec = {
                "prompt": render_prompt(tokenizer, serving, rec["prompt"]),
                "chosen": render_completion(rec["chosen"], eot),
                "rejected": render_completion(rec["rejected"], eot),
            }
        prompt = rec["prompt"]
        if adds_bos and prompt.startswith(tokenizer.bos_token):
            prompt = prompt[len(tokenizer.bos_token) :]
        n_prompt = len(tokenizer(prompt)["input_ids"])
        if n_prompt > max_prompt_length:
            skipped.append(f"{loc}: prompt is {n_prompt} tokens, over training.max_prompt_length={max_prompt_length}")
            continue
        # TRL appends EOS to a completion not ending with it; trailing whitespace after it would double it.
        rows.append({"prompt": prompt, "chosen": rec["chosen"].rstrip(), "rejected": rec["rejected"].rstrip()})
    return rows, skipped


def build_trainer(
    persona: Persona, rows: list[dict[str, str]], output_dir: str | Path, *, max_steps: int | None = None,
    device: str | None = None, eval_rows: list[dict[str, str]] | None = None,
) -> Any:
    """A ready `DPOTrainer` for `rows`, evaluating on `eval_rows` after every epoch when given
    (reference log-probs of both already computed when precomputing)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from dpo_tasks.models import default_device, load_policy, trainer_optimizer

    tc, mc = persona.config.training, persona.config.model
    device = device or default_device()
    cuda = device.startswith("cuda")
    model, tokenizer = load_policy(
        mc.base, mc.sft_adapter, trainable=mc.sft_adapter is not None, device=device, quantization=tc.quantization,
        revision=mc.revision,
    )
    # Reference log-probs (precomputed before train() switches modes) must not see dropout.
    model.eval()
    optim = trainer_optimizer(cuda)
    args = DPOConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=tc.batch_size,
        gradient_accumulation_steps=tc.grad_accum,
        learning_rate=tc.learning_rate,
        # transformers 5 reads a float in [0, 1) as a share of the total steps (warmup_ratio is gone).
        warmup_steps=tc.warmup_ratio,
        num_train_epochs=tc.epochs,
        max_steps=max_steps if max_steps else -1,
        beta=tc.beta,
        max_length=tc.max_length,
        precompute_ref_log_probs=tc.precompute_ref_log_probs,
        seed=tc.seed,
        data_seed=tc.seed,
        bf16=cuda,
        fp16=False,
        use_cpu=not cuda,
        optim=optim,
        # Activation memory matters for a 3B model on the GPU, not for the embedded 135M one on CPU.
        activation_checkpointing=cuda,
        # The LoRA dropout from the config applies to the trained adapter; the reference stays deterministic.
        disable_dropout=False,
        logging_steps=1,
        eval_strategy="epoch" if eval_rows else "no",
        per_device_eval_batch_size=tc.batch_size,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    peft_config = None
    if mc.sft_adapter is None:
        peft_config = LoraConfig(
            r=tc.lora_r,
            lora_alpha=tc.lora_alpha,
            lora_dropout=tc.lora_dropout,
            target_modules=list(tc.target_modules),
            task_type="CAUSAL_LM",
        )
    # Continuing an SFT adapter, TRL copies it into a frozen adapter named "ref" built from
    # the adapter's config. Built with its LoRA dropout, the reference would be noisy (the new
    # modules start in train mode, even while the log-probs are precomputed), so it is built without.
    sft_config = model.peft_config["default"] if mc.sft_adapter is not None else None
    sft_dropout = sft_config.lora_dropout if sft_config is not None else None
    if sft_config is not None:
        sft_config.lora_dropout = 0.0
    try:
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[trainer_progress_callback(f"train {persona.id}", _STEP_KEYS, logger=log)],
        )
    finally:
        if sft_config is not None:
            sft_config.lora_dropout = sft_dropout
    return trainer


def _lora_summary(model: Any) -> dict[str, Any]:
    cfg = model.peft_config["default"]
    return {
        "r": cfg.r,
        "alpha": cfg.lora_alpha,
        "dropout": cfg.lora_dropout,
        "target_modules": sorted(cfg.target_modules) if cfg.target_modules else None,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def run(persona: Persona, run_dir: str | Path | RunDir, *, data: str | Path | None = None, max_steps: int | None = None) -> dict[str, Any]:
    import yaml

    from dpo_tasks.models import check_quantization, default_device, load_tokenizer, resolve_model_path

    # A 4-bit run on a machine without CUDA fails here, before the data or any model is loaded.
    check_quantization(persona.config.training.quantization, default_device())
    rd = (run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)).ensure()
    data_path = Path(data) if data else rd.dpo
    if not data_path.exists():
        raise ConfigError(f"training data not found: {str(data_path)!r} (run the format stage, or pass --data FILE)")
    # With the sft stage on, DPO continues its adapter, the way it continues a configured
    # `model.sft_adapter` (the reference is then the SFT model).
    from dpo_tasks.sft import trained_adapter

    sft_adapter = trained_adapter(persona, rd)
    if sft_adapter is not None:
        cfg = persona.config
        persona = persona.model_copy(update={"config": cfg.model_copy(update={"model": cfg.model.model_copy(update={"sft_adapter": sft_adapter})})})
        log.info("starting DPO from the sft stage's adapter %s (it is also the reference model)", sft_adapter)
    tc, mc = persona.config.training, persona.config.model

    rows, skipped = load_dataset_rows(data_path, load_tokenizer(mc.base, mc.revision), persona)
    for message in skipped:
        log.warning("%s: skipped %s", data_path, message)
    if not rows:
        raise ConfigError(f"no usable record in {str(data_path)!r}: {len(skipped)} skipped (first: {skipped[:1]!r})")
    train_rows, eval_rows = split_holdout(rows, tc.seed)
    log.info(
        "training %s on %d pairs, %d held out for evaluation (%d skipped) from %s",
        persona.id, len(train_rows), len(eval_rows), len(skipped), data_path,
    )

    rd.train.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    trainer = build_trainer(persona, train_rows, rd.train / "trainer", max_steps=max_steps, eval_rows=eval_rows)
    prepare_s = time.monotonic() - start
    result = trainer.train()
    evals = [dict(e) for e in trainer.state.log_history if "eval_loss" in e]
    if eval_rows and (not evals or evals[-1].get("step") != trainer.state.global_step):
        # --max-steps can stop mid-epoch: evaluate the adapter that is saved.
        trainer.evaluate()
        evals = [dict(e) for e in trainer.state.log_history if "eval_loss" in e]
    train_s = time.monotonic() - start - prepare_s
    device = str(trainer.args.device)

    # Save only the trained adapter (not TRL's "ref" copy), atomically: a half-written
    # adapter/ must never look like a finished one to evaluate or publish.
    save_trained_adapter(trainer, mc.base, rd.adapter, rd.train / "trainer")

    steps = [dict(entry) for entry in trainer.state.log_history if "loss" in entry and "train_runtime" not in entry]
    last = steps[-1] if steps else {}
    per_epoch = epoch_means(steps)
    last_epoch = per_epoch[-1] if per_epoch else {}
    final_eval = evals[-1] if evals else {}
    summary = {
        "stage": "train",
        "persona": persona.id,
        "pairs": len(rows),
        "train_pairs": len(train_rows),
        "eval_pairs": len(eval_rows),
        "skipped": len(skipped),
        "steps": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0), 3),
        "train_loss": result.training_loss,
        "loss": last_epoch.get("loss"),
        "reward_accuracy": last_epoch.get("reward_accuracy"),
        "reward_margin": last_epoch.get("reward_margin"),
        "epoch_means": per_epoch,
        "final_loss": last.get("loss"),
        "eval_loss": final_eval.get("eval_loss"),
        "eval_reward_accuracy": final_eval.get("eval_rewards/accuracies"),
        "eval_reward_margin": final_eval.get("eval_rewards/margins"),
        "steps_per_s": round(trainer.state.global_step / train_s, 4) if train_s else None,
        "prepare_seconds": round(prepare_s, 2),
        "train_seconds": round(train_s, 2),
        "device": device,
        "started_from": "sft stage adapter" if sft_adapter else "model.sft_adapter" if mc.sft_adapter else "base",
        "adapter": str(rd.adapter),
    }
    write_json(rd.train / "metrics.json", {"steps": steps, "evaluations": evals, "summary": summary, "skipped_records": skipped})

    effective = {
        "persona": persona.id,
        "model": {"base": mc.base, "revision": mc.revision, "resolved": resolve_model_path(mc.base), "sft_adapter": mc.sft_adapter},
        "reference": "sft_adapter" if mc.sft_adapter else "base",
        "training": persona.config.training.model_dump(mode="json"),
        "lora": _lora_summary(trainer.model),
        "runtime": {
            "device": device,
            "bf16": trainer.args.bf16,
            "quantization": tc.quantization,
            "optim": str(trainer.args.optim.value if hasattr(trainer.args.optim, "value") else trainer.args.optim),
            "activation_checkpointing": trainer.args.activation_checkpointing,
            "max_steps": max_steps,
            "effective_batch_size": tc.batch_size * tc.grad_accum,
        },
        "data": {"path": str(data_path), "sha256": sha256_file(data_path), "pairs": len(rows), "skipped": len(skipped),
                 "train_pairs": len(train_rows), "eval_pairs": len(eval_rows)},
        "versions": _versions(),
    }
    (rd.train / "config.yaml").write_text(yaml.safe_dump(effective, sort_keys=False))
    write_json(rd.stage_summary("train"), summary)
    log.info(
        "trained %s: %d steps, loss %.4f, last-epoch reward accuracy %s, held-out loss %s / reward accuracy %s -> %s",
        persona.id, summary["steps"], summary["train_loss"], summary["reward_accuracy"], summary["eval_loss"],
        summary["eval_reward_accuracy"], rd.adapter,
    )
    return summary


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {pkg: version(pkg) for pkg in ("torch", "transformers", "peft", "trl")}


def make_parser(command: str = "train") -> argparse.ArgumentParser:
    from dpo_tasks.cli import add_max_steps_arg, add_persona_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_persona_args(parser)
    parser.add_argument("--data", default=None, help="DPO dataset (JSONL or JSON list) instead of <run-dir>/dpo.jsonl")
    add_max_steps_arg(parser, "stop after this many optimizer steps (tests, benchmarks)")
    return parser


def main(args: argparse.Namespace) -> int:
    from dpo_tasks.cli import persona_from_args

    summary = run(persona_from_args(args), args.run_dir, data=args.data, max_steps=args.max_steps)
    print(
        f"train: {summary['pairs']} pairs ({summary['skipped']} skipped), {summary['steps']} steps, "
        f"loss {summary['train_loss']:.4f}, reward accuracy {_fmt(summary['reward_accuracy'])} (last-epoch mean); "
        f"held out: {summary['eval_pairs']} pairs, loss {_fmt(summary['eval_loss'])}, "
        f"reward accuracy {_fmt(summary['eval_reward_accuracy'])} -> {summary['adapter']}"
    )
    return 0
