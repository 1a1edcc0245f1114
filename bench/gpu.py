"""GPU figures: generate, train and evaluate's answers on CUDA, for the embedded and the production shape.

No weights can reach a device machine (nothing is downloaded there), and speed does not depend on
the weights: each shape is a randomly initialised Llama of that configuration, saved to a local
model directory with a word-level tokenizer of the same vocabulary size and a ChatML template, and
then run through the project's own stage code with `model.base` pointing at it:

- generate: `dpo_tasks.generate.run` (two variants per prompt; its tokens/s),
- train: `dpo_tasks.train.run` on `toy-data` pairs (bf16 on CUDA; paged 8-bit AdamW where
  bitsandbytes is installed, else adamw_torch: the table says which), for `--train-steps` steps,
- evaluate: the answer generation of `dpo_tasks.evaluate` (the policy with the trained adapter, the
  persona's evaluation cases and sampling settings; the judging needs no GPU and is not timed).

Each shape runs in a subprocess of its own; peak GPU memory is `torch.cuda.max_memory_allocated`
per stage (reset before each). Prints one table row per shape and stage.

    python bench/gpu.py                       # CUDA, both shapes, the defaults below
    python bench/gpu.py --shapes production --train-steps 10
    python bench/gpu.py --device cpu --tiny   # the same code path on CPU, tiny shapes (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PERSONA = "persona_e_mexican_vegan"

# SmolLM2-135M(-Instruct)'s configuration: the embedded default model.
EMBEDDED = dict(
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
    vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
)
# Llama-3.2-3B(-Instruct)'s configuration: the production model (its llama3 rope scaling included).
PRODUCTION = dict(
    hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
    head_dim=128, vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192},
)
# --tiny: the same architecture flags (grouped-query attention, tied embeddings) at toy size.
TINY = {
    "embedded": dict(EMBEDDED, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3,
                     num_key_value_heads=1, vocab_size=512),
    "production": dict(PRODUCTION, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, vocab_size=1024),
}
SHAPES = {"embedded": EMBEDDED, "production": PRODUCTION}
COLUMNS = ("shape", "params", "stage", "device", "tokens/s", "steps/s", "peak GPU MiB", "notes")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def settings(tiny: bool) -> dict[str, int]:
    # 8 pairs: full batches only, and under train.HOLDOUT_MIN_PAIRS, so no held-out evaluation runs
    # inside the timed loop (steps/s is optimizer steps only; the pairs repeat over epochs).
    if tiny:
        return dict(prompts=4, gen_tokens=8, gen_batch=4, train_steps=2, train_pairs=8, train_batch=2, max_length=128,
                    eval_cases=4, eval_tokens=8)
    return dict(prompts=64, gen_tokens=256, gen_batch=32, train_steps=20, train_pairs=8, train_batch=4, max_length=1024,
                eval_cases=20, eval_tokens=256)


def write_model(shape: dict[str, Any], out: Path, device: str) -> int:
    """A random Llama of `shape` and a matching word-level tokenizer in `out`; returns the parameter count."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), shape["vocab_size"])})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<|endoftext|>", eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")}
    config = LlamaConfig(**shape, pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], bos_token_id=None)
    torch.manual_seed(0)
    # Initialised where it will run, in bf16 on CUDA: a 3B model's fp32 init on the CPU takes minutes.
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if device.startswith("cuda") else torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    del model
    return params


class Peak:
    """Peak GPU memory (MiB) of the code inside the block; None on the CPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.mib: float | None = None

    def __enter__(self) -> "Peak":
        if self.cuda:
            import gc

            import torch

            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.mib = round(torch.cuda.max_memory_allocated() / 2**20, 1)


def run_shape(name: str, shape: dict[str, Any], s: dict[str, int], device: str, work: Path) -> list[dict[str, Any]]:
    import logging

    import yaml

    from dpo_tasks import evaluate, generate, train
    from dpo_tasks.config import load_persona, with_overrides
    from dpo_tasks.generate import generate_texts
    from dpo_tasks.models import load_policy
    from dpo_tasks.prompts import load_eval_cases
    from dpo_tasks.runs import write_jsonl
    from dpo_tasks.validate import toy_records

    logging.basicConfig(level=logging.WARNING)
    model_dir = work / f"model-{name}"
    params = write_model(shape, model_dir, device)
    persona = with_overrides(load_persona(PERSONA), {
        "model": {"base": str(model_dir), "sft_adapter": None},
        "generation": {"num_prompts": s["prompts"], "max_new_tokens": s["gen_tokens"], "batch_size": s["gen_batch"]},
        "training": {"batch_size": s["train_batch"], "grad_accum": 1, "max_length": s["max_length"],
                     "max_prompt_length": s["max_length"] // 2},
        "evaluation": {"max_new_tokens": s["eval_tokens"]},
    })
    row = {"shape": name, "params": params, "device": device}
    rows = []
    run_dir = work / f"run-{name}"

    with Peak(device) as peak:
        summary = generate.run(persona, run_dir)
    rows.append({**row, "stage": "generate", "tokens/s": summary["tokens_per_s"], "peak GPU MiB": peak.mib,
                 "notes": f"{summary['prompts']} prompts x 2 variants, {s['gen_tokens']} new tokens max, batch {s['gen_batch']}"})

    assert s["train_pairs"] < train.HOLDOUT_MIN_PAIRS and s["train_pairs"] % s["train_batch"] == 0
    data = write_jsonl(work / f"pairs-{name}.jsonl", toy_records(persona, s["train_pairs"], seed=0))
    with Peak(device) as peak:
        summary = train.run(persona, run_dir, data=data, max_steps=s["train_steps"])
    runtime = yaml.safe_load((Path(run_dir) / "train" / "config.yaml").read_text())["runtime"]
    rows.append({**row, "stage": "train", "steps/s": summary["steps_per_s"], "peak GPU MiB": peak.mib,
                 "notes": f"{summary['steps']} steps, batch {s['train_batch']}, max_length {s['max_length']}, "
                          f"optim {runtime['optim']}, bf16 {runtime['bf16']}, LoRA"})

    # Evaluate's answer generation: the calls `evaluate.generate_answers` makes (the policy with the
    # trained adapter, the persona's serving conversation, the evaluation sampling settings), with
    # generate_texts' own token count and timing, so the model load is not in the figure.
    cases = load_eval_cases(PERSONA)[: s["eval_cases"]]
    ev = persona.config.evaluation
    with Peak(device) as peak:
        model, tokenizer = load_policy(str(model_dir), summary["adapter"])
        stats: dict[str, float] = {}
        generate_texts(model, tokenizer, [evaluate._conversation(persona, c["prompt"]) for c in cases],
                       temperature=ev.temperature, top_p=persona.config.generation.top_p, max_new_tokens=ev.max_new_tokens,
                       batch_size=persona.config.generation.batch_size, seed=ev.seed, label="evaluate:candidate", stats=stats)
        del model
    rows.append({**row, "stage": "evaluate", "tokens/s": round(stats["new_tokens"] / stats["seconds"], 2), "peak GPU MiB": peak.mib,
                 "notes": f"{len(cases)} cases, {ev.max_new_tokens} new tokens max, temperature {ev.temperature}, with the LoRA adapter"})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], col: str) -> str:
        value = row.get(col)
        if value is None:
            return "-"
        if col == "params":
            return f"{value / 1e6:.1f}M"
        return str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell(r, c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="toy-sized shapes and counts (the CPU test)")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--train-steps", type=int, default=None, help="optimizer steps to time (default 20; 2 with --tiny)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    s = settings(args.tiny)
    if args.train_steps:
        s["train_steps"] = args.train_steps

    if args.shape:  # the child: one shape, rows as JSON on the last line
        shape = (TINY if args.tiny else SHAPES)[args.shape]
        print(json.dumps(run_shape(args.shape, shape, s, args.device, Path(args.work))))
        return

    env = {**os.environ, "TQDM_DISABLE": "1"}
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("bench/gpu.py: no CUDA device here; --device cpu --tiny runs the same code path on the CPU")
        header = f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    else:
        # The stages pick CUDA whenever they see it: hide it for a CPU run.
        env["CUDA_VISIBLE_DEVICES"] = ""
        header = "CPU"
    try:
        import bitsandbytes  # noqa: F401

        header += ", bitsandbytes installed"
    except Exception:  # not installed, or no kernel for this machine
        header += ", no bitsandbytes (adamw_torch)"

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        for name in args.shapes:
            work = Path(tmp) / name
            work.mkdir()
            cmd = [sys.executable, __file__, "--device", args.device, "--shape", name, "--work", str(work),
                   "--train-steps", str(s["train_steps"]), *(["--tiny"] if args.tiny else [])]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                sys.exit(f"{name} failed:\n{proc.stderr[-4000:]}")
            rows += json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"bench/gpu.py: {header}; {'tiny shapes' if args.tiny else 'embedded = SmolLM2-135M config, production = Llama-3.2-3B config'}, random weights")
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
