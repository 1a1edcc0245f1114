"""The shipped prompt pools and evaluation cases: shape, size, checklists, and held out from each other."""

from collections import Counter

import pytest

from dpo_tasks import textsim
from dpo_tasks.config import load_personas
from dpo_tasks.judges.rules import violations
from dpo_tasks.prompts import DATA_DIR, EVAL_CATEGORIES, load_eval_cases, load_prompt_pool

PERSONAS = load_personas().personas
PERSONA_IDS = sorted(PERSONAS)
# The reference pipeline's proportions: 40% basic, 30% constraint stress, 20% edge, 10% cross-persona.
EVAL_MIX = dict(zip(EVAL_CATEGORIES, (24, 18, 12, 6)))
POOL_MIN = 500
CHECKLIST_KEYS = {"forbid", "require_any", "min_ingredients", "min_steps"}


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_every_persona_ships_data_and_nothing_else():
    assert sorted(p.stem for p in (DATA_DIR / "prompts").glob("*.jsonl")) == PERSONA_IDS
    assert sorted(p.stem for p in (DATA_DIR / "eval").glob("*.jsonl")) == PERSONA_IDS


@pytest.mark.parametrize("persona_id", PERSONA_IDS)
def test_prompt_pool_shape(persona_id):
    pool = load_prompt_pool(persona_id)
    assert len(pool) >= POOL_MIN
    assert all(set(row) == {"id", "prompt"} for row in pool)
    assert all(row["id"].startswith(f"{persona_id}-p") for row in pool)
    assert len({row["id"] for row in pool}) == len(pool)
    assert all(len(row["prompt"]) >= 20 for row in pool)


@pytest.mark.parametrize("persona_id", PERSONA_IDS)
def test_prompt_pool_has_no_near_duplicates(persona_id):
    pool = load_prompt_pool(persona_id)
    assert textsim.near_duplicate_pairs([(row["id"], row["prompt"]) for row in pool]) == []


@pytest.mark.parametrize("persona_id", PERSONA_IDS)
def test_eval_cases_have_the_category_mix_and_a_checklist(persona_id):
    cases = load_eval_cases(persona_id)
    assert all(set(row) == {"id", "category", "prompt", "checklist"} for row in cases)
    assert Counter(row["category"] for row in cases) == EVAL_MIX
    assert len({row["id"] for row in cases}) == len(cases)
    assert all(row["id"] == f"{persona_id}-e{i:03d}" for i, row in enumerate(cases, start=1))
    assert textsim.near_duplicate_pairs([(row["id"], row["prompt"]) for row in cases]) == []
    for row in cases:
        checklist = row["checklist"]
        assert set(checklist) == CHECKLIST_KEYS, row["id"]
        assert all(isinstance(w, str) and w == w.strip().lower() and w for w in checklist["forbid"]), row["id"]
        groups = checklist["require_any"]
        assert all(g and all(isinstance(w, str) and w.strip() == w and w for w in g) for g in groups), row["id"]
        assert isinstance(checklist["min_ingredients"], int) and 1 <= checklist["min_ingredients"] <= 10, row["id"]
        assert isinstance(checklist["min_steps"], int) and 1 <= checklist["min_steps"] <= 10, row["id"]
        # Only a vague edge case ("Something Italian for tonight") may leave the request's content open.
        assert groups or row["category"] == "edge_case", row["id"]


@pytest.mark.parametrize("persona_id", PERSONA_IDS)
def test_checklist_forbids_nothing_the_request_asks_for(persona_id):
    """A forbidden word that the request itself requires would make a case impossible to pass."""
    for row in load_eval_cases(persona_id):
        required = {w for group in row["checklist"]["require_any"] for w in group if len(group) == 1}
        assert not required & set(row["checklist"]["forbid"]), row["id"]


def test_eval_prompts_are_held_out_from_every_pool():
    """No evaluation case is a near-duplicate (dpo_tasks.textsim) of any persona's pool prompt."""
    index = textsim.Index((row["id"], row["prompt"]) for pid in PERSONA_IDS for row in load_prompt_pool(pid))
    leaked = {row["id"]: index.matches(row["prompt"]) for pid in PERSONA_IDS for row in load_eval_cases(pid)}
    assert {k: v for k, v in leaked.items() if v} == {}


def test_the_held_out_check_would_catch_a_reworded_copy():
    case = load_eval_cases("persona_a_korean_spicy")[0]["prompt"]
    index = textsim.Index([("copy", case.replace("fiery", "very spicy").replace(".", "!"))])
    assert index.matches(case)


@pytest.mark.parametrize("persona_id", [pid for pid in PERSONA_IDS if PERSONAS[pid].forbidden])
def test_stress_cases_and_only_they_name_a_forbidden_ingredient(persona_id):
    persona = PERSONAS[persona_id]
    named = {row["id"]: bool(violations(persona, row["prompt"])) for row in load_eval_cases(persona_id)}
    stress = {row["id"] for row in load_eval_cases(persona_id) if row["category"] == "constraint_stress"}
    assert {i for i, hit in named.items() if hit} == stress
    assert not [row["id"] for row in load_prompt_pool(persona_id) if violations(persona, row["prompt"])]


@pytest.mark.slow
def test_build_script_reproduces_the_committed_files():
    from dpo_tasks.data import build

    stale = [path.name for path, text in build.build().items() if path.read_text() != text]
    assert stale == []
