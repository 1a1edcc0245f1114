"""The shipped prompt pools and evaluation cases: shape, size, and held out from each other."""

from collections import Counter

import pytest

from dpo_tasks.config import load_personas
from dpo_tasks.prompts import DATA_DIR, EVAL_CATEGORIES, load_eval_cases, load_prompt_pool

PERSONAS = load_personas().personas
PERSONA_IDS = sorted(PERSONAS)
EVAL_MIX = dict(zip(EVAL_CATEGORIES, (8, 6, 4, 2)))


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_every_persona_ships_data_and_nothing_else():
    assert sorted(p.stem for p in (DATA_DIR / "prompts").glob("*.jsonl")) == PERSONA_IDS
    assert sorted(p.stem for p in (DATA_DIR / "eval").glob("*.jsonl")) == PERSONA_IDS


@pytest.mark.parametrize("persona_id", PERSONA_IDS)
def test_prompt_pool_shape(persona_id):
    pool = load_prompt_pool(persona_id)
    assert len(pool) >= 60
    assert all(set(row) == {"id", "prompt"} for row in pool)
    assert all(row["id"].startswith(f"{persona_id}-p") for row in pool)
    assert len({row["id"] for row in pool}) == len(pool)
    assert len({norm(row["prompt"]) for row in pool}) == len(pool), "duplicate prompts in the pool"
    assert all(len(row["prompt"]) >= 20 for row in pool)


@pytest.mark.parametrize("persona_id", PERSONA_IDS)
def test_eval_cases_have_the_category_mix(persona_id):
    cases = load_eval_cases(persona_id)
    assert all(set(row) == {"id", "category", "prompt"} for row in cases)
    assert Counter(row["category"] for row in cases) == EVAL_MIX
    assert len({row["id"] for row in cases}) == len(cases)
    assert len({norm(row["prompt"]) for row in cases}) == len(cases)


def test_eval_prompts_are_held_out_from_every_pool():
    pooled = {norm(row["prompt"]) for pid in PERSONA_IDS for row in load_prompt_pool(pid)}
    leaked = [
        (pid, row["id"]) for pid in PERSONA_IDS for row in load_eval_cases(pid) if norm(row["prompt"]) in pooled
    ]
    assert leaked == []


@pytest.mark.parametrize("persona_id", [pid for pid in PERSONA_IDS if PERSONAS[pid].forbidden])
def test_stress_cases_and_only_they_name_a_forbidden_ingredient(persona_id):
    from dpo_tasks.judges.rules import violations

    persona = PERSONAS[persona_id]
    named = {row["id"]: bool(violations(persona, row["prompt"])) for row in load_eval_cases(persona_id)}
    stress = {row["id"] for row in load_eval_cases(persona_id) if row["category"] == "constraint_stress"}
    assert {i for i, hit in named.items() if hit} == stress
    assert not [row["id"] for row in load_prompt_pool(persona_id) if violations(persona, row["prompt"])]
