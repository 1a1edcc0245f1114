"""Reward-model labeling with a tiny LlamaForSequenceClassification trained here to like beans and dislike cheese."""

from __future__ import annotations

import json

import pytest

from dpo_tasks.config import ConfigError, RewardConfig, load_persona, with_overrides
from dpo_tasks.judges import make_judge
from dpo_tasks.prompts import system_prompt
from dpo_tasks.runs import read_jsonl, write_jsonl

PERSONA = load_persona("persona_e_mexican_vegan")
DISHES = ["tacos", "burrito bowl", "enchiladas", "tostadas", "pozole", "quesadillas", "chilaquiles", "tamales"]
GOOD_ING = ["black beans and avocado", "pinto beans and lime", "avocado and cilantro", "sweet potato and black beans"]
BAD_ING = ["cheese and sour cream", "chicken and cheese", "cheddar and butter", "pork and cheese"]


def recipe(dish: str, ing: str) -> str:
    return f"{dish.title()}\nIngredients: {ing}, corn tortillas.\nSteps: 1. Cook the {ing}. 2. Serve the {dish}."


@pytest.fixture(scope="module")
def reward_model_dir(smol_tokenizer_dir, tmp_path_factory):
    """A tiny reward model, trained with the Bradley-Terry loss on the conversations the judge scores."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, num_labels=1, pad_token_id=tok.pad_token_id, max_position_embeddings=512)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    sys_msg = system_prompt(PERSONA, "serving")

    def conv(text: str) -> str:
        return tok.apply_chat_template([{"role": "system", "content": sys_msg}, {"role": "user", "content": "A Mexican dinner?"},
                                        {"role": "assistant", "content": text}], tokenize=False)

    good = [conv(recipe(d, g)) for d in DISHES for g in GOOD_ING]
    bad = [conv(recipe(d, b)) for d in DISHES for b in BAD_ING]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to thread hand-offs on a shared CPU
    try:
        for step in range(40):
            idx = torch.randperm(len(good))[:8].tolist()
            enc_g = tok([good[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc_b = tok([bad[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            loss = -torch.nn.functional.logsigmoid(model(**enc_g).logits - model(**enc_b).logits).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    out = tmp_path_factory.mktemp("reward_model")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def reward_persona(model_dir, **reward):
    return with_overrides(PERSONA, {"labeling": {"judge": "reward", "reward": {"model_path": str(model_dir), **reward}}})


def test_scores_prefer_what_the_model_was_trained_on_and_ignore_batch_padding(reward_model_dir):
    judge = make_judge("reward", reward_persona(reward_model_dir))
    good, bad = recipe("tacos", "black beans and avocado"), recipe("tacos", "cheese and sour cream") + " Enjoy it hot with extra toppings."
    s_good, s_bad = judge.score(PERSONA, "A Mexican dinner?", [good, bad])
    assert s_good > s_bad
    [alone] = judge.score(PERSONA, "A Mexican dinner?", [good])
    assert alone == pytest.approx(s_good, abs=1e-4), "padding changed a response's reward"


def test_label_stage_takes_best_and_worst_of_n_candidates(reward_model_dir, tmp_path):
    rows = []
    for i, dish in enumerate(DISHES[:4]):
        cands = [recipe(dish, BAD_ING[i]), recipe(dish, GOOD_ING[i]), recipe(dish, BAD_ING[(i + 1) % 4]), recipe(dish, GOOD_ING[(i + 1) % 4])]
        rows.append({"id": f"r{i}", "prompt": "A Mexican dinner?", **{f"variant_{c}": t for c, t in zip("abcd", cands)}})
    same = recipe("pozole", "pinto beans and lime")
    rows.append({"id": "same", "prompt": "Pozole?", **{f"variant_{c}": same for c in "abcd"}})
    write_jsonl(tmp_path / "variants.jsonl", rows)

    from dpo_tasks.label import run as label_run

    summary = label_run(reward_persona(reward_model_dir), tmp_path)
    pairs = read_jsonl(tmp_path / "labeled.jsonl")
    assert [p["id"] for p in pairs] == ["r0", "r1", "r2", "r3"]
    for p in pairs:
        assert not any(w in p["chosen"] for w in ("cheese", "chicken", "pork", "butter")), p
        assert any(w in p["rejected"] for w in ("cheese", "chicken", "pork", "butter")), p
        assert p["margin"] >= 0.05 and p["margin"] == pytest.approx(max(p["rewards"].values()) - min(p["rewards"].values()), abs=1e-5)
        assert set(p["rewards"]) == set("abcd")
    assert summary["dropped"]["identical"] == 1 and summary["kept"] == 4


def test_pairs_under_the_margin_are_dropped(reward_model_dir, tmp_path):
    rows = [{"id": "r0", "prompt": "Tacos?", "variant_a": recipe("tacos", GOOD_ING[0]), "variant_b": recipe("tacos", BAD_ING[0])}]
    write_jsonl(tmp_path / "variants.jsonl", rows)
    from dpo_tasks.label import run as label_run

    summary = label_run(reward_persona(reward_model_dir, min_margin=1e6), tmp_path)
    assert summary["kept"] == 0 and summary["dropped"]["under_margin"] == 1


def test_missing_model_path_is_a_config_error():
    with pytest.raises(ConfigError, match="labeling.reward.model_path"):
        make_judge("reward", with_overrides(PERSONA, {"labeling": {"judge": "reward"}}))


@pytest.mark.slow
def test_generate_writes_n_candidates_for_reward_labeling(tiny_model_dir, tmp_path):
    from dpo_tasks.generate import run as generate_run

    persona = with_overrides(PERSONA, {
        "model": {"base": str(tiny_model_dir)},
        "generation": {"num_prompts": 2, "max_new_tokens": 8, "batch_size": 2},
        "labeling": {"judge": "reward", "reward": {"num_candidates": 4, "model_path": "unused-here"}},
    })
    generate_run(persona, tmp_path)
    rows = read_jsonl(tmp_path / "variants.jsonl")
    assert len(rows) == 2 and all({"variant_a", "variant_b", "variant_c", "variant_d"} <= set(r) for r in rows)
    assert json.loads((tmp_path / "summaries" / "generate.json").read_text())["variants_written"] == 2
