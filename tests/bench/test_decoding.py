"""bench/decoding.py: each setting's usable, cut-off and check rates come from the checklist judge on real generations."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dpo_tasks.config import load_persona, with_overrides
from dpo_tasks.prompts import SCAFFOLD, load_eval_cases, system_prompt

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import decoding  # noqa: E402


def test_every_setting_is_measured_on_the_same_cases(tiny_model_dir):
    from dpo_tasks.models import load_policy

    persona = with_overrides(load_persona("persona_e_mexican_vegan"), {"generation": {"batch_size": 4}})
    model, tokenizer = load_policy(str(tiny_model_dir))
    cases = load_eval_cases(persona.id)[:4]
    for name in ("plain", "rp=1.15+nrng=4", "user_scaffold+t=0.3"):
        r = decoding.measure(persona, model, tokenizer, cases, max_new_tokens=4, **decoding.SETTINGS[name])
        # Four tokens from a random model: every answer is cut off, so none is usable.
        assert r["cut_off_rate"] == 1.0 and r["usable_rate"] == 0.0 and r["pass_rate"]["complete"] == 0.0
        assert set(r["pass_rate"]) == {"persona_rules", "forbid", "ingredients", "steps", "complete", "not_repetitive"}


@pytest.mark.parametrize("kind", ["serving", "strong", "weak"])
def test_the_scaffold_is_appended_to_any_system_prompt(kind):
    persona = load_persona("persona_e_mexican_vegan")
    assert system_prompt(persona, kind, scaffold=True) == f"{system_prompt(persona, kind)} {SCAFFOLD}"
