"""DPO training with precomputed reference log-probs vs the reference computed at every step.

Same model (the persona's base, SmolLM2-135M-Instruct by default), same data
(`toy-data` pairs rendered like `format` does), same number of optimizer steps.
Each variant runs in its own subprocess so peak RSS is its own. Prints steps/s
of the training loop, wall time including the precompute pass, peak RSS, and
the ratios.

    python bench/train.py [--steps 12] [--pairs 8] [--batch-size 2]

The defaults cover 3 epochs (the default `training.epochs`): the precomputed
pass is paid once, the per-step reference forward once per step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"precomputed": True, "on-the-fly": False}


def run_variant(args: argparse.Namespace) -> dict[str, float]:
    import logging

    from dpo_tasks import train
    from dpo_tasks.config import load_persona, with_overrides
    from dpo_tasks.models import load_tokenizer
    from dpo_tasks.runs import write_jsonl
    from dpo_tasks.validate import toy_records

    logging.basicConfig(level=logging.WARNING)
    persona = with_overrides(
        load_persona(args.persona),
        {"training": {"precompute_ref_log_probs": VARIANTS[args.variant], "batch_size": args.batch_size, "grad_accum": 1, "max_length": 256, "max_prompt_length": 128}},
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = write_jsonl(Path(tmp) / "toy.jsonl", toy_records(persona, args.pairs, seed=0))
        rows, skipped = train.load_dataset_rows(data, load_tokenizer(persona.config.model.base), persona)
        assert not skipped, skipped
        start = time.monotonic()
        trainer = train.build_trainer(persona, rows, Path(tmp) / "out", max_steps=args.steps)
        prepared = time.monotonic()
        trainer.train()
        done = time.monotonic()
    return {
        "steps": trainer.state.global_step,
        "steps_per_s": trainer.state.global_step / (done - prepared),
        "train_seconds": done - prepared,
        "total_seconds": done - start,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persona", default="persona_e_mexican_vegan")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return

    results = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", variant, "--persona", args.persona, "--steps", str(args.steps), "--pairs", str(args.pairs), "--batch-size", str(args.batch_size)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if proc.returncode != 0:
            sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])

    pre, fly = results["precomputed"], results["on-the-fly"]
    import torch

    print(f"{args.steps} DPO steps, {args.pairs} pairs, batch {args.batch_size}, persona {args.persona}, torch threads {torch.get_num_threads()}")
    for name, r in results.items():
        print(f"{name:<12}: {r['steps_per_s']:.3f} steps/s (train {r['train_seconds']:.1f} s, total {r['total_seconds']:.1f} s with setup), peak RSS {r['peak_rss_mib']:.0f} MiB")
    print(f"ratio       : {pre['steps_per_s'] / fly['steps_per_s']:.2f}x steps/s, {fly['total_seconds'] / pre['total_seconds']:.2f}x total time, "
          f"{pre['peak_rss_mib'] / fly['peak_rss_mib']:.2f}x peak RSS (precomputed / on-the-fly)")


if __name__ == "__main__":
    main()
