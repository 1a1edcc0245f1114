"""System prompts: strong spells out the persona's rules, weak and serving do not; data loaders."""

import pytest

from dpo_tasks.config import load_personas
from dpo_tasks.judges.rules import violations
from dpo_tasks.prompts import EVAL_CATEGORIES, load_eval_cases, load_prompt_pool, system_prompt

PERSONAS = load_personas().personas


@pytest.mark.parametrize("persona_id", sorted(PERSONAS))
def test_strong_prompt_spells_out_the_rules(persona_id):
    persona = PERSONAS[persona_id]
    text = system_prompt(persona, "strong")
    assert persona.name in text and persona.cuisines[0] in text
    assert all(r in text for r in persona.dietary_restrictions)
    assert all(f"{category} (" in text or f"{category}." in text for category in persona.forbidden)
    assert persona.preferred_ingredients[0] in text and "numbered steps" in text
    # Forbidden words appear only inside the "Never use" sentence, never as a suggestion.
    elsewhere = ". ".join(s for s in text.split(". ") if not s.startswith("Never use"))
    assert violations(persona, elsewhere) == []


@pytest.mark.parametrize("persona_id", sorted(PERSONAS))
def test_weak_and_serving_prompts_leave_the_rules_out(persona_id):
    persona = PERSONAS[persona_id]
    weak, serving = system_prompt(persona, "weak"), system_prompt(persona, "serving")
    assert persona.name not in weak and persona.cuisines[0] not in weak
    assert persona.name in serving and persona.cuisines[0] in serving
    for text in (weak, serving):
        assert "Never use" not in text and violations(persona, text) == []
        assert not any(p in text for p in persona.preferred_ingredients)


def test_strong_prompt_examples_skip_the_category_word():
    text = system_prompt(PERSONAS["persona_e_mexican_vegan"], "strong")
    assert "meat (beef, chicken, pork, chorizo)" in text and "meat (meat" not in text


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="kind 'medium' is not one of"):
        system_prompt(PERSONAS["persona_e_mexican_vegan"], "medium")


def test_loaders_read_shipped_data_and_are_empty_for_unknown_personas():
    assert len(load_prompt_pool("persona_e_mexican_vegan")) >= 60
    assert {c["category"] for c in load_eval_cases("persona_e_mexican_vegan")} == set(EVAL_CATEGORIES)
    assert load_prompt_pool("persona_z_unknown") == [] and load_eval_cases("persona_z_unknown") == []
