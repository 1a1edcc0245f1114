"""The trigger form: validation of what a user types, and its translation into CLI overrides."""

from __future__ import annotations

import pytest
from airflow.sdk import ParamsDict
from airflow.sdk.exceptions import ParamValidationError

from dpo_tasks.cli import parse_overrides
from dpo_tasks.config import load_persona, with_overrides
from dpo_tasks.orchestration.params import overrides_from_params, persona_params

PERSONA = "persona_b_indian_veg"


@pytest.fixture(scope="module")
def persona():
    return load_persona(PERSONA)


def test_form_defaults_are_the_personas_config(persona):
    values = ParamsDict(persona_params(persona.config)).dump()
    assert values["num_prompts"] == persona.config.generation.num_prompts
    assert values["judge"] == persona.config.labeling.judge
    assert values["eval_judge"] == persona.config.evaluation.judge
    assert values["eval_samples"] == persona.config.evaluation.samples_per_case == 1
    assert values["min_win_rate_lower_bound"] == persona.config.gate.min_win_rate_lower_bound
    assert values["epochs"] == persona.config.training.epochs
    assert values["dry_run"] is False
    # An untouched form changes nothing: its overrides reproduce the persona's config.
    sets = overrides_from_params(values)
    assert with_overrides(persona, parse_overrides(sets)).config == persona.config


def test_every_field_has_a_title_and_description(persona):
    for name, param in persona_params(persona.config).items():
        assert param.schema.get("title"), name
        assert param.description, name


@pytest.mark.parametrize(
    "field, value",
    [
        pytest.param("num_prompts", 0, id="zero-prompts"),
        pytest.param("num_prompts", "ten", id="prompts-not-a-number"),
        pytest.param("judge", "gpt4", id="unknown-judge"),
        pytest.param("eval_judge", "groq", id="groq-cannot-evaluate"),
        pytest.param("eval_samples", 9, id="too-many-samples-per-case"),
        pytest.param("eval_samples", 0, id="zero-samples-per-case"),
        pytest.param("min_win_rate_lower_bound", 1.5, id="bound-above-one"),
        pytest.param("epochs", 0, id="zero-epochs"),
        pytest.param("dry_run", "yes", id="dry-run-not-boolean"),
        pytest.param("sft", "yes", id="sft-not-boolean"),
    ],
)
def test_form_rejects_bad_values(persona, field, value):
    params = ParamsDict(persona_params(persona.config))
    params.validate()  # the defaults are valid
    with pytest.raises(ParamValidationError, match=field):
        params[field] = value


def test_form_values_become_set_overrides(persona):
    values = ParamsDict(persona_params(persona.config)).dump()
    values.update(num_prompts=7, judge="groq", eval_judge="gemini", eval_samples=3,
                  min_win_rate_lower_bound=0.42, epochs=1, sft=True, overrides={"training.learning_rate": 1e-4, "generation.seed": 3})
    sets = overrides_from_params(values)
    assert sets == [
        "generation.num_prompts=7", 'labeling.judge="groq"', 'evaluation.judge="gemini"', "evaluation.samples_per_case=3",
        "gate.min_win_rate_lower_bound=0.42", "training.epochs=1", "sft.enabled=true", "generation.seed=3", "training.learning_rate=0.0001",
    ]
    cfg = with_overrides(persona, parse_overrides(sets)).config
    assert (cfg.generation.num_prompts, cfg.labeling.judge, cfg.evaluation.judge) == (7, "groq", "gemini")
    assert (cfg.gate.min_win_rate_lower_bound, cfg.training.epochs, cfg.training.learning_rate, cfg.generation.seed) == (0.42, 1, 1e-4, 3)
    assert cfg.sft.enabled and cfg.evaluation.samples_per_case == 3


@pytest.mark.parametrize(
    "overrides, match",
    [
        pytest.param(["training.epochs"], "must be an object", id="not-an-object"),
        pytest.param({"": 1}, "bad key ''", id="empty-key"),
        pytest.param({"training.": 1}, "bad key 'training.'", id="trailing-dot"),
        pytest.param({"model.base": "/m/tiny"}, "'model.base' cannot be set by a run", id="model-path"),
        pytest.param({"runner": "kubernetes"}, "'runner' cannot be set by a run", id="runner"),
        pytest.param({"kubernetes": {"image": "evil"}}, "'kubernetes.image' cannot be set", id="nested-k8s"),
        pytest.param({"kubernetes.train.gpu_count": 1}, "'kubernetes.train.gpu_count' cannot be set", id="pod-resources"),
        pytest.param({"generation.seed": 1, "generation.seed.x": 2}, "both as a value and as a section", id="conflicting-keys"),
    ],
)
def test_bad_extra_overrides_are_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        overrides_from_params({"overrides": overrides})


def test_a_string_value_that_looks_like_yaml_stays_a_string(persona):
    # "yes"/"1e-4"/"null" typed in the form must not turn into bool/float/None on the CLI.
    sets = overrides_from_params({"overrides": {"training.target_modules": ["yes", "null"], "labeling.judge": "null"}})
    parsed = parse_overrides(sets)
    assert parsed == {"training": {"target_modules": ["yes", "null"]}, "labeling": {"judge": "null"}}
