"""personas.yaml loading: the shipped file is valid, bad entries are named precisely and isolated."""

from pathlib import Path

import pytest
import yaml

from dpo_tasks.cli import parse_overrides
from dpo_tasks.config import (
    ConfigError,
    load_persona,
    load_personas,
    load_personas_lenient,
    with_overrides,
)

SHIPPED_IDS = [
    "persona_a_korean_spicy",
    "persona_b_indian_veg",
    "persona_c_italian_gf",
    "persona_d_japanese_lowsodium",
    "persona_e_mexican_vegan",
    "persona_f_chinese_keto",
]


def write_personas(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(Path("personas.yaml").read_text())
    mutate(raw)
    path = tmp_path / "personas.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_file_loads_all_six_personas_with_reference_defaults():
    personas = load_personas().personas
    assert list(personas) == SHIPPED_IDS
    training = personas["persona_e_mexican_vegan"].config.training
    assert (training.lora_r, training.lora_alpha, training.lora_dropout) == (16, 16, 0.05)
    assert training.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert (training.learning_rate, training.beta, training.epochs) == (5e-5, 0.1, 3)
    assert (training.batch_size, training.grad_accum) == (4, 4)
    assert (training.max_length, training.max_prompt_length) == (512, 256)


@pytest.mark.parametrize(
    "persona_id, word, restriction",
    [
        pytest.param("persona_b_indian_veg", "shrimp", "seafood", id="shrimp-is-seafood"),
        pytest.param("persona_e_mexican_vegan", "paneer", "dairy", id="paneer-is-dairy"),
        pytest.param("persona_e_mexican_vegan", "queso", "cheese", id="queso-is-cheese"),
        pytest.param("persona_c_italian_gf", "spaghetti", "pasta", id="spaghetti-is-pasta"),
        pytest.param("persona_d_japanese_lowsodium", "shoyu", "soy sauce", id="shoyu-is-soy-sauce"),
        pytest.param("persona_f_chinese_keto", "honey", "sugar", id="honey-is-sugar"),
    ],
)
def test_forbidden_synonyms_map_to_their_restriction(persona_id, word, restriction):
    assert load_persona(persona_id).forbidden_terms()[word] == restriction


def test_korean_persona_has_no_forbidden_ingredients():
    assert load_persona("persona_a_korean_spicy").forbidden_terms() == {}


def test_persona_override_merges_over_defaults():
    indian = load_persona("persona_b_indian_veg")
    assert indian.config.schedule == "0 3 * * 1"
    assert indian.config.training.learning_rate == 5e-5  # untouched sibling keys survive the merge


@pytest.mark.parametrize(
    "mutate, persona_id, expected",
    [
        pytest.param(
            lambda raw: raw["personas"][1].setdefault("overrides", {}).update(training={"learning_rate": "fast"}),
            "persona_b_indian_veg",
            ["persona 'persona_b_indian_veg'", "overrides.training.learning_rate", "'fast'"],
            id="bad-type-in-override",
        ),
        pytest.param(
            lambda raw: raw["personas"][2].update(cuisnes=["italian"]),
            "persona_c_italian_gf",
            ["persona 'persona_c_italian_gf'", "unknown field 'cuisnes'"],
            id="typo-field",
        ),
        pytest.param(
            lambda raw: raw["personas"][3].setdefault("overrides", {}).update(gate={"min_win_rate_lower_bound": 1.5}),
            "persona_d_japanese_lowsodium",
            ["overrides.gate.min_win_rate_lower_bound", "1.5", "less than or equal to 1"],
            id="out-of-range",
        ),
        pytest.param(
            lambda raw: raw["personas"][0].update(id="Persona A!"),
            "Persona A!",
            ["'Persona A!'", "must match"],
            id="bad-id",
        ),
    ],
)
def test_bad_persona_is_named_and_the_others_still_load(tmp_path, mutate, persona_id, expected):
    path = write_personas(tmp_path, mutate)
    result = load_personas_lenient(path)
    assert persona_id in result.errors
    for fragment in expected:
        assert fragment in result.errors[persona_id]
    assert len(result.personas) == 5
    with pytest.raises(ConfigError) as exc:
        load_personas(path)
    assert persona_id in str(exc.value)


def test_duplicate_persona_id_is_an_error_for_that_id(tmp_path):
    path = write_personas(tmp_path, lambda raw: raw["personas"].append(dict(raw["personas"][0])))
    result = load_personas_lenient(path)
    assert "defined more than once" in result.errors["persona_a_korean_spicy"]
    assert "persona_a_korean_spicy" not in result.personas


def test_bad_defaults_fail_the_whole_file(tmp_path):
    path = write_personas(tmp_path, lambda raw: raw["defaults"]["training"].update(epochs=0))
    with pytest.raises(ConfigError, match=r"defaults: field 'training.epochs' = 0"):
        load_personas_lenient(path)


def test_unknown_persona_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown persona id 'persona_z'.*persona_a_korean_spicy"):
        load_persona("persona_z")


def test_run_overrides_are_validated_like_the_file():
    persona = load_persona("persona_e_mexican_vegan")
    changed = with_overrides(persona, parse_overrides(["training.epochs=1", "labeling.judge=groq"]))
    assert changed.config.training.epochs == 1 and changed.config.labeling.judge == "groq"
    assert persona.config.training.epochs == 3
    with pytest.raises(ConfigError, match=r"labeling.judge' = 'gpt'"):
        with_overrides(persona, parse_overrides(["labeling.judge=gpt"]))
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["training.epochs"])


# --- where the model stages run (runner, kubernetes) -----------------------------------------

K8S = {"runner": "kubernetes", "kubernetes": {"image": "registry.example/persona-dpo/trainer:1.0.0"}}


def _k8s_override(persona: int, **kubernetes):
    def mutate(raw):
        raw["personas"][persona]["overrides"] = {"runner": "kubernetes", "kubernetes": K8S["kubernetes"] | kubernetes}
    return mutate


@pytest.mark.parametrize(
    "image, ok",
    [
        pytest.param("registry.example/persona-dpo/trainer:1.0.0", True, id="release-tag"),
        pytest.param("localhost:5000/trainer:2", True, id="registry-port-and-tag"),
        pytest.param("registry.example/trainer@sha256:" + "a" * 64, True, id="digest"),
        pytest.param("registry.example/persona-dpo/trainer", False, id="no-tag"),
        pytest.param("localhost:5000/trainer", False, id="registry-port-no-tag"),
        pytest.param("registry.example/persona-dpo/trainer:latest", False, id="latest"),
        pytest.param("registry.example/trainer@sha256:abc", False, id="bad-digest"),
    ],
)
def test_pod_image_must_be_pinned(tmp_path, image, ok):
    result = load_personas_lenient(write_personas(tmp_path, _k8s_override(0, image=image)))
    if ok:
        assert result.personas["persona_a_korean_spicy"].config.kubernetes.image == image
    else:
        error = result.errors["persona_a_korean_spicy"]
        assert "overrides.kubernetes.image" in error and repr(image) in error and ("tag" in error or "digest" in error)


def test_kubernetes_runner_needs_an_image(tmp_path):
    result = load_personas_lenient(write_personas(tmp_path, lambda raw: raw["personas"][0].update(overrides={"runner": "kubernetes"})))
    assert "kubernetes.image is not set" in result.errors["persona_a_korean_spicy"]


def test_more_than_one_gpu_per_pod_is_refused(tmp_path):
    result = load_personas_lenient(write_personas(tmp_path, _k8s_override(0, train={"gpu_count": 2})))
    error = result.errors["persona_a_korean_spicy"]
    assert "overrides.kubernetes.train.gpu_count" in error and "torchrun" in error


@pytest.mark.parametrize("old", ["runner", "kubernetes"])
def test_the_old_training_level_runner_settings_fail_saying_where_they_moved(tmp_path, old):
    value = "kubernetes" if old == "runner" else {"image": "x:1"}
    result = load_personas_lenient(write_personas(tmp_path, lambda raw: raw["personas"][0].update(overrides={"training": {old: value}})))
    error = result.errors["persona_a_korean_spicy"]
    assert f"training.{old} moved to the pipeline level" in error and "runner: local | kubernetes" in error


def test_production_profile_loads_with_production_backends_and_the_shipped_personas():
    prod = load_personas(Path(__file__).resolve().parents[2] / "deploy" / "personas.production.yaml")
    shipped = load_personas()
    assert sorted(prod.personas) == sorted(shipped.personas)
    for pid, persona in prod.personas.items():
        cfg = persona.config
        assert cfg.runner == "kubernetes"
        assert cfg.model.base == "meta-llama/Llama-3.2-3B-Instruct" and cfg.model.revision
        assert cfg.model.sft_adapter.startswith("gs://")
        assert (cfg.labeling.judge, cfg.evaluation.judge) == ("groq", "gemini")
        assert cfg.kubernetes.hf_token_secret is not None and cfg.kubernetes.gke
        # The persona entries are personas.yaml's; only the pipeline settings differ.
        assert persona.model_dump(exclude={"config"}) == shipped.personas[pid].model_dump(exclude={"config"})


def test_a_repeated_set_takes_the_later_value_but_a_value_and_a_section_conflict():
    from dpo_tasks.cli import parse_overrides

    # `make demo DEMO_ARGS="--set generation.num_prompts=64"` repeats a key of the demo's settings.
    assert parse_overrides(["generation.num_prompts=32", "generation.num_prompts=64"]) == {"generation": {"num_prompts": 64}}
    with pytest.raises(ConfigError, match="conflicts with an earlier --set of 'gate'"):
        parse_overrides(["gate=1", "gate.min_win_rate_lower_bound=0.4"])
    with pytest.raises(ConfigError, match="a key inside 'gate'"):
        parse_overrides(["gate.min_win_rate_lower_bound=0.4", "gate=1"])
