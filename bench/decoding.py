"""Decoding settings and a format scaffold vs the usable-answer rate, on the embedded model.

Answers the persona's evaluation cases with the serving system prompt (as evaluate does, base model,
no adapter) under several settings and reports, per setting, the checklist judge's usable-answer
rate, how many answers were cut off at the token limit, the mean ingredient lines and steps, and
the share of answers passing each check.

    python bench/decoding.py [--persona persona_e_mexican_vegan] [--cases 20] [--max-new-tokens 192]
                             [--system serving|strong|weak] [--only plain scaffold ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

from dpo_tasks.config import DEFAULT_PERSONA, load_persona
from dpo_tasks.generate import generate
from dpo_tasks.judges.checklist import ChecklistJudge
from dpo_tasks.models import load_policy
from dpo_tasks.prompts import SCAFFOLD, load_eval_cases, system_prompt

SETTINGS = {
    "plain": {},
    "repetition_penalty=1.2": {"repetition_penalty": 1.2},
    "no_repeat_ngram_size=4": {"no_repeat_ngram_size": 4},
    "rp=1.15+nrng=4": {"repetition_penalty": 1.15, "no_repeat_ngram_size": 4},
    "scaffold": {"scaffold": True},
    "scaffold+rp=1.15+nrng=4": {"scaffold": True, "repetition_penalty": 1.15, "no_repeat_ngram_size": 4},
    "scaffold+rp=1.1": {"scaffold": True, "repetition_penalty": 1.1},
    # The format asked for in the user's turn: small models follow the last message more than the system prompt.
    "user_scaffold": {"user_scaffold": True},
    "user_scaffold+t=0.3": {"user_scaffold": True, "temperature": 0.3},
    "user_scaffold+rp=1.2": {"user_scaffold": True, "repetition_penalty": 1.2},
}


def measure(persona, model, tokenizer, cases, *, max_new_tokens: int, scaffold: bool = False, user_scaffold: bool = False,
            temperature: float | None = None, system_kind: str = "serving", **decoding) -> dict:
    system = system_prompt(persona, system_kind, scaffold=scaffold)
    conversations = [[{"role": "system", "content": system},
                      {"role": "user", "content": f"{c['prompt']}\n\n{SCAFFOLD}" if user_scaffold else c["prompt"]}] for c in cases]
    cfg = persona.config
    start = time.monotonic()
    temperature = cfg.evaluation.temperature if temperature is None else temperature
    outs = generate(model, tokenizer, conversations, temperature=temperature, top_p=cfg.generation.top_p,
                    max_new_tokens=max_new_tokens, batch_size=cfg.generation.batch_size, seed=cfg.evaluation.seed, **decoding)
    seconds = time.monotonic() - start
    judge = ChecklistJudge(cases=cases, cut_off=[o.text for o in outs if o.cut_off])
    results = [judge.check(persona, c["prompt"], o.text) for c, o in zip(cases, outs)]
    passed = Counter(name for r in results for name, ok in r.checks.items() if ok and not name.startswith("request_"))
    n = len(results)
    return {
        "usable_rate": sum(r.usable for r in results) / n,
        "cut_off_rate": sum(o.cut_off for o in outs) / n,
        "mean_ingredients": sum(r.ingredients for r in results) / n,
        "mean_steps": sum(r.steps for r in results) / n,
        "pass_rate": {k: passed[k] / n for k in ("persona_rules", "forbid", "ingredients", "steps", "complete", "not_repetitive")},
        "seconds": round(seconds, 1),
        "example": outs[0].text,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persona", default=DEFAULT_PERSONA)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the persona's evaluation.max_new_tokens")
    parser.add_argument("--only", nargs="*", default=None, help=f"settings to run (default all): {', '.join(SETTINGS)}")
    parser.add_argument("--system", default="serving", choices=["serving", "strong", "weak"],
                        help="system prompt (serving: what evaluate uses; strong/weak: generate's variants A/B)")
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args()

    persona = load_persona(args.persona)
    cases = load_eval_cases(persona.id)[: args.cases]
    max_new_tokens = args.max_new_tokens or persona.config.evaluation.max_new_tokens
    model, tokenizer = load_policy(persona.config.model.base)
    rows = {}
    for name in args.only or SETTINGS:
        rows[name] = measure(persona, model, tokenizer, cases, max_new_tokens=max_new_tokens, system_kind=args.system, **SETTINGS[name])
        r = rows[name]
        print(f"{name:26s} usable {r['usable_rate']:5.0%}  cut off {r['cut_off_rate']:5.0%}  ingredients {r['mean_ingredients']:4.1f}  "
              f"steps {r['mean_steps']:4.1f}  pass {json.dumps({k: round(v, 2) for k, v in r['pass_rate'].items()})}  {r['seconds']} s",
              flush=True)
    print(f"persona {persona.id}, {len(cases)} cases, {args.system} system prompt, max_new_tokens {max_new_tokens}, "
          f"model {persona.config.model.base}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"persona": persona.id, "cases": len(cases), "max_new_tokens": max_new_tokens, "settings": rows}, f, indent=2)


if __name__ == "__main__":
    main()
