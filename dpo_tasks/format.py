"""Stage `format`: labeled pairs -> DPO records `{prompt, chosen, rejected}` in the model's chat format.

    python -m dpo_tasks format --persona persona_e_mexican_vegan --run-dir runs/demo

Reads `labeled.jsonl`, writes `dpo.jsonl` and `summaries/format.json`.

- prompt: the serving system prompt and the user's request rendered with the
  tokenizer's chat template of `model.base`, ending with the generation prompt
  (`<|im_start|>assistant\\n` for ChatML), exactly what the served model sees.
- chosen / rejected: the assistant text followed by exactly one end-of-turn
  token (`<|im_end|>` for ChatML). Text after an end-of-turn token the policy
  already produced is cut, so the token is never doubled; nothing follows it, so
  TRL (which appends the EOS token when a completion does not end with it)
  adds nothing either.

A pair whose chosen answer was cut off at the token limit (`chosen_cut_off` from
label, which already drops them) is skipped and counted (`cut_off`): TRL appends
EOS to a completion that lacks it, so there is no way to hand it an unfinished
turn, and closing a chosen one would teach that a recipe may stop mid-sentence.
A cut-off *rejected* answer is kept, closed, and counted (`rejected_cut_off`):
DPO lowers the likelihood of the rejected turn, end-of-turn included, so it
teaches the opposite, that stopping mid-recipe (or looping to the limit) is
worse. Dropping those pairs too left the embedded model's demo with no pair at
all (its answers loop into the limit far more often than not).

The training-length check counts tokens of prompt + response and reports how
many records TRL will truncate at `training.max_length`.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from typing import Any

from dpo_tasks.cli import add_persona_args, persona_from_args
from dpo_tasks.config import Persona
from dpo_tasks.prompts import system_prompt
from dpo_tasks.runs import Progress, RunDir, read_jsonl, sha256_file, write_json, write_jsonl

log = logging.getLogger(__name__)

_PROBE = "\u2063PERSONA-DPO-PROBE\u2063"


def end_of_turn(tokenizer: Any) -> str:
    """What the chat template writes after an assistant message (`<|im_end|>`), else the EOS token."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": _PROBE}], tokenize=False
    )
    tail = rendered.split(_PROBE, 1)[1].strip() if _PROBE in rendered else ""
    return tail or tokenizer.eos_token


def render_prompt(tokenizer: Any, system: str, user: str) -> str:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_completion(text: str, eot: str) -> str:
    return text.split(eot, 1)[0].strip() + eot


def run(persona: Persona, run_dir: str | RunDir, *, tokenizer: Any = None) -> dict[str, Any]:
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run_dir.labeled.exists():
        raise FileNotFoundError(f"{run_dir.labeled} not found: run the label stage first")
    if tokenizer is None:
        from dpo_tasks.models import load_tokenizer

        tokenizer = load_tokenizer(persona.config.model.base, persona.config.model.revision)
    eot = end_of_turn(tokenizer)
    system = system_prompt(persona, "serving")
    max_length = persona.config.training.max_length
    rows = read_jsonl(run_dir.labeled)

    records, sources, skipped, too_long, longest, cut_off, rejected_cut_off = [], Counter(), 0, 0, 0, 0, 0
    progress = Progress(f"format {persona.id}", len(rows), unit="pairs", logger=log)
    for n, row in enumerate(rows, start=1):
        fields = [row.get(f) for f in ("prompt", "chosen", "rejected")]
        ok = all(isinstance(f, str) and f.strip() for f in fields)
        if ok:
            chosen, rejected = render_completion(row["chosen"], eot), render_completion(row["rejected"], eot)
            ok = chosen != eot and rejected != eot and chosen != rejected
        if not ok:
            skipped += 1
            log.warning("labeled.jsonl record %d (id %r): needs a prompt and two different, non-empty responses; skipped", n, row.get("id"))
            progress.advance()
            continue
        if row.get("chosen_cut_off"):
            cut_off += 1
            log.info("labeled.jsonl record %d (id %r): the chosen answer was cut off at the token limit; skipped, not closed as a finished turn",
                     n, row.get("id"))
            progress.advance()
            continue
        rejected_cut_off += bool(row.get("rejected_cut_off"))
        prompt = render_prompt(tokenizer, system, row["prompt"])
        record = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        total = prompt_tokens + max(len(tokenizer(record[f], add_special_tokens=False)["input_ids"]) for f in ("chosen", "rejected"))
        longest = max(longest, total)
        too_long += total > max_length
        records.append(record)
        sources[row.get("source", "generated")] += 1
        progress.advance()
    write_jsonl(run_dir.dpo, records)

    summary = {
        "stage": "format",
        "persona": persona.id,
        "records": len(records),
        "skipped": skipped,
        "cut_off": cut_off,
        "rejected_cut_off": rejected_cut_off,
        "by_source": dict(sources),
        "end_of_turn": eot,
        "longest_tokens": longest,
        "over_max_length": too_long,
        "max_length": max_length,
        "output": str(run_dir.dpo),
        "sha256": sha256_file(run_dir.dpo),
    }
    write_json(run_dir.stage_summary("format"), summary)
    if too_long:
        log.warning("format %s: %d of %d records exceed training.max_length=%d tokens and will be truncated by the trainer",
                    persona.id, too_long, len(records), max_length)
    log.info("format %s: wrote %d DPO records (%s; %d with a cut-off rejected answer), skipped %d malformed and %d with a cut-off "
             "chosen answer", persona.id, len(records), ", ".join(f"{k} {v}" for k, v in sources.items()) or "none", rejected_cut_off,
             skipped, cut_off)
    return summary


def make_parser(command: str = "format") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Render labeled.jsonl into DPO records in the model's chat format (dpo.jsonl).")
    add_persona_args(p)
    return p


def main(args: argparse.Namespace) -> int:
    persona = persona_from_args(args)
    run(persona, args.run_dir)
    return 0
