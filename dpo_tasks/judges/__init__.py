"""Judges: the offline rule and checklist judges and the API judges (Groq, Gemini), behind one interface.

`make_judge(kind, persona, **options)` builds the judge a config names
(`labeling.judge`, `evaluation.judge`). Judge modules are imported only when
asked for, so choosing "rules" never imports an API client.
"""

from __future__ import annotations

from typing import Any

from dpo_tasks.config import Persona
from dpo_tasks.judges.base import Judge

JUDGE_KINDS = ("rules", "checklist", "groq", "gemini", "reward")


def make_judge(kind: str, persona: Persona, **options: Any) -> Judge:
    if kind == "rules":
        from dpo_tasks.judges.rules import RuleJudge

        return RuleJudge(**options)
    if kind == "checklist":
        from dpo_tasks.judges.checklist import ChecklistJudge
        from dpo_tasks.prompts import load_eval_cases

        # The persona's shipped cases unless the caller names them (evaluate passes the ones it runs).
        options.setdefault("cases", load_eval_cases(persona.id))
        return ChecklistJudge(**options)
    # API judges take `cache_dir` (the run dir's cache/, so reruns make no repeated calls)
    # and, for tests, `api_key` / `credentials`.
    if kind == "groq":
        from dpo_tasks.judges.groq import GroqJudge

        return GroqJudge(persona.config.labeling.groq, **options)
    if kind == "gemini":
        from dpo_tasks.judges.gemini import GeminiJudge

        return GeminiJudge(persona.config.evaluation.gemini, **options)
    if kind == "reward":
        from dpo_tasks.judges.reward import RewardJudge

        cfg = persona.config
        return RewardJudge(cfg.labeling.reward, max_length=cfg.training.max_length, batch_size=cfg.generation.batch_size, **options)
    raise ValueError(f"judge {kind!r} is not known (persona {persona.id!r}); choose one of: {', '.join(JUDGE_KINDS)}")
