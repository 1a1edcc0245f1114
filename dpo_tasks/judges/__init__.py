"""Judges: the offline rule judge and the API judges (Groq, Gemini), behind one interface.

`make_judge(kind, persona, **options)` builds the judge a config names
(`labeling.judge`, `evaluation.judge`). Judge modules are imported only when
asked for, so choosing "rules" never imports an API client.
"""

from __future__ import annotations

from typing import Any

from dpo_tasks.config import Persona
from dpo_tasks.judges.base import Judge

JUDGE_KINDS = ("rules",)


def make_judge(kind: str, persona: Persona, **options: Any) -> Judge:
    if kind == "rules":
        from dpo_tasks.judges.rules import RuleJudge

        return RuleJudge(**options)
    raise ValueError(f"judge {kind!r} is not known (persona {persona.id!r}); choose one of: {', '.join(JUDGE_KINDS)}")
