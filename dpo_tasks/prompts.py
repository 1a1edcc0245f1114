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
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from dpo_tasks.config import Persona
from dpo_tasks.runs import read_jsonl

DATA_DIR = Path(__file__).resolve().parent / "data"
SystemKind = Literal["strong", "weak", "serving"]
EVAL_CATEGORIES = ("basic_alignment", "constraint_stress", "edge_case", "cross_persona")
EXAMPLES_PER_RESTRICTION = 4


def system_prompt(persona: Persona, kind: SystemKind) -> str:
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
