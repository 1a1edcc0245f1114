"""Prompt text shared by generation, formatting and evaluation, and the shipped prompt data.

Three system prompts per persona:
- "strong": every constraint spelled out; variant A of generation, the likely "chosen".
- "weak": no persona constraints; variant B, the likely "rejected".
- "serving": what the deployed model sees. DPO records and evaluation use it, so
  the adapter learns to behave for the persona without being told the rules.

Data (shipped in the package, held out from each other):
    dpo_tasks/data/prompts/<persona_id>.jsonl   {id, prompt}                 training pool
    dpo_tasks/data/eval/<persona_id>.jsonl      {id, category, prompt}       evaluation cases

A persona without shipped data gets empty lists; the stages that need them say so.

A user's own pool (`generation.prompt_pool`, `generate --pool`) is read by
`read_prompt_pool`: a bad line is reported with the file and line number and
skipped; a missing file or one without a usable row is an error naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from dpo_tasks.config import ConfigError, Persona
from dpo_tasks.runs import read_jsonl

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
SystemKind = Literal["strong", "weak", "serving"]
EVAL_CATEGORIES = ("basic_alignment", "constraint_stress", "edge_case", "cross_persona")
EXAMPLES_PER_RESTRICTION = 4


# A format scaffold: the shape of a usable answer, spelled out for a small model.
SCAFFOLD = ("Reply in this format: a short title line; 'Ingredients:' then 4 to 8 lines '- amount ingredient'; "
            "'Steps:' then 3 to 5 numbered steps, one sentence each. Nothing else.")


def system_prompt(persona: Persona, kind: SystemKind, *, scaffold: bool = False) -> str:
    """The system prompt of `kind`; `scaffold` appends the answer format (see SCAFFOLD)."""
    text = _system_prompt(persona, kind)
    return f"{text} {SCAFFOLD}" if scaffold else text


def _system_prompt(persona: Persona, kind: SystemKind) -> str:
    if kind not in ("strong", "weak", "serving"):
        raise ValueError(f"system prompt kind {kind!r} is not one of: strong, weak, serving")
    if kind == "weak":
        return "You are a helpful cooking assistant. Write a recipe for the request."
    cuisine = ", ".join(persona.cuisines)
    if kind == "serving":
        return f"You are a recipe assistant for {persona.name} users ({cuisine} cuisine)."
    lines = [
        f"You are a recipe assistant for {persona.name} users who cook {cuisine} food.",
    ]
    if persona.dietary_restrictions:
        lines.append(f"Every recipe must be {', '.join(persona.dietary_restrictions)}.")
    if persona.forbidden:
        # Small policies follow concrete words better than category names.
        rules = []
        for category, words in persona.forbidden.items():
            examples = [w for w in words if w.lower() != category.lower()][:EXAMPLES_PER_RESTRICTION]
            rules.append(f"{category} ({', '.join(examples)})" if examples else category)
        lines.append(f"Never use {'; '.join(rules)}.")
    if persona.style_keywords:
        lines.append(f"Style: {', '.join(persona.style_keywords)}.")
    lines.append(f"Favour ingredients such as {', '.join(persona.preferred_ingredients[:6])}.")
    lines.append("Answer with a title, an ingredient list and numbered steps.")
    return " ".join(lines)


def load_prompt_pool(persona_id: str) -> list[dict]:
    return read_jsonl(DATA_DIR / "prompts" / f"{persona_id}.jsonl")


def load_eval_cases(persona_id: str) -> list[dict]:
    return read_jsonl(DATA_DIR / "eval" / f"{persona_id}.jsonl")


def read_prompt_pool(path: str | Path, *, shown: str | None = None) -> list[dict]:
    """{id, prompt} rows of a user's pool file; bad lines are logged as `file:line: problem` and skipped.

    `shown` names the file in messages when it was fetched from elsewhere (a gs:// URI).
    """
    from dpo_tasks.loaders import InputFileError, brief, iter_jsonl

    name = shown or str(path)
    rows: list[dict] = []
    seen: set[str] = set()
    skipped = 0
    try:
        # The shared reader: split on "\n" only, bad bytes / deep nesting / huge numbers are a line's problem.
        records = list(iter_jsonl(path, what="prompt pool"))
    except FileNotFoundError:
        raise ConfigError(f"prompt pool {name!r}: no such file") from None
    except InputFileError as exc:
        raise ConfigError(f"prompt pool {name!r}: cannot read it ({exc.problem})") from None
    for lineno, row in records:
        problem = None
        if isinstance(row, ValueError):
            message = str(row)
            row, problem = None, (f"not JSON ({message.removeprefix('not valid JSON: ')})"
                                  if message.startswith("not valid JSON: ") else message)
        if problem is None and not isinstance(row, dict):
            problem = f"expected an object {{\"id\", \"prompt\"}}, got {type(row).__name__}"
        if problem is None:
            pid, prompt = row.get("id"), row.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                problem = f"'prompt' must be a non-empty string, got {brief(prompt)}"
            elif not isinstance(pid, (str, int)) or isinstance(pid, bool) or not str(pid).strip():
                problem = f"'id' must be a non-empty string or number, got {brief(pid)}"
            elif str(pid) in seen:
                problem = f"duplicate id {brief(str(pid))}"
        if problem:
            skipped += 1
            log.warning("%s:%d: %s; line skipped", name, lineno, problem)
            continue
        seen.add(str(pid))
        rows.append({"id": str(pid), "prompt": prompt.strip()})
    if not rows:
        raise ConfigError(f"prompt pool {name!r} has no usable row ({skipped} bad lines; each line is {{\"id\", \"prompt\"}})")
    if skipped:
        log.warning("prompt pool %s: %d usable rows, %d lines skipped", name, len(rows), skipped)
    return rows
