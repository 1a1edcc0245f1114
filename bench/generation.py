"""Batched vs one-prompt-at-a-time generation on the default model (SmolLM2-135M-Instruct).

Same prompts, same sampling settings, same code path (`generate.generate_texts`);
only the batch size differs. Prints tokens/s of each and the ratio (goal: >= 4x).

    python bench/generation.py [--prompts 16] [--batch-size 16] [--max-new-tokens 192]
"""

from __future__ import annotations

import argparse
import logging

from dpo_tasks.config import DEFAULT_PERSONA, load_persona
from dpo_tasks.generate import generate_texts
from dpo_tasks.models import load_policy
from dpo_tasks.prompts import load_prompt_pool, system_prompt


def measure(model, tokenizer, conversations, *, batch_size: int, max_new_tokens: int, temperature: float, top_p: float) -> dict[str, float]:
    stats: dict[str, float] = {}
    generate_texts(
        model, tokenizer, conversations, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
        batch_size=batch_size, seed=0, label=f"batch size {batch_size}", stats=stats,
    )
    return {"tokens": stats["new_tokens"], "seconds": stats["seconds"], "tokens_per_s": stats["new_tokens"] / stats["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persona", default=DEFAULT_PERSONA)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the persona's generation.batch_size")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the persona's generation.max_new_tokens")
    args = parser.parse_args()
    # Progress lines from generate_texts, so a slow machine shows it is working.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    persona = load_persona(args.persona)
    gen = persona.config.generation
    batch_size = args.batch_size or gen.batch_size
    max_new_tokens = args.max_new_tokens or gen.max_new_tokens
    system = system_prompt(persona, "strong")
    conversations = [
        [{"role": "system", "content": system}, {"role": "user", "content": row["prompt"]}]
        for row in load_prompt_pool(persona.id)[: args.prompts]
    ]
    model, tokenizer = load_policy(persona.config.model.base)
    settings = dict(max_new_tokens=max_new_tokens, temperature=gen.strong_temperature, top_p=gen.top_p)
    measure(model, tokenizer, conversations[:2], batch_size=2, **{**settings, "max_new_tokens": 8})  # warm-up

    single = measure(model, tokenizer, conversations, batch_size=1, **settings)
    batched = measure(model, tokenizer, conversations, batch_size=batch_size, **settings)
    import torch

    print(
        f"model {persona.config.model.base}, {len(conversations)} prompts, max_new_tokens {max_new_tokens}, "
        f"device {next(model.parameters()).device}, torch threads {torch.get_num_threads()}"
    )
    print(f"one at a time : {single['tokens_per_s']:8.1f} tokens/s ({single['tokens']:.0f} tokens in {single['seconds']:.1f} s)")
    print(f"batched ({batch_size:>3}) : {batched['tokens_per_s']:8.1f} tokens/s ({batched['tokens']:.0f} tokens in {batched['seconds']:.1f} s)")
    print(f"ratio         : {batched['tokens_per_s'] / single['tokens_per_s']:8.2f}x (goal >= 4x)")


if __name__ == "__main__":
    main()
