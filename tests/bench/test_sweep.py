"""bench/sweep.py: one dataset from the pipeline's stages, a grid trained on the same split, the best judged, all resumable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dpo_tasks.runs import RunDir, read_json, read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import sweep  # noqa: E402


def tiny_sets(tiny_model_dir: Path) -> list[str]:
    sets = [f"model.base={tiny_model_dir}", "generation.num_prompts=2", "generation.max_new_tokens=8", "generation.batch_size=4",
            "evaluation.max_new_tokens=8", "training.batch_size=2", "training.max_length=128", "training.max_prompt_length=64"]
    return [a for s in sets for a in ("--set", s)]


def test_grid_on_one_dataset_judges_the_best_and_resumes(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "sweep"
    # A random tiny model's two variants are mostly ties, which label drops; feedback pairs (an input
    # the label stage merges) make sure the dataset has enough pairs for a held-out split.
    write_jsonl(RunDir(out / "data").ensure().feedback_pairs, [
        {"id": f"fb{i}", "prompt": f"Vegan tacos for {i} people", "source": "feedback",
         "chosen": "Black bean tacos: corn tortillas, black beans, avocado, lime. 1. Warm. 2. Fill.",
         "rejected": "Beef tacos with cheese and sour cream."}
        for i in range(12)
    ])
    argv = ["--out", str(out), "--lr", "1e-2", "--epochs", "1", "--warmup", "0", "--config", "1e-2:1:0.5", "--judge-top", "1",
            "--json", str(tmp_path / "sweep.json"), *tiny_sets(tiny_model_dir)]
    assert sweep.main(argv) == 0
    text = capsys.readouterr().out
    result = json.loads((tmp_path / "sweep.json").read_text())
    rows = {r["config"]: r for r in result["rows"]}
    assert set(rows) == {"lr0.01-ep1-wu0", "lr0.01-ep1-wu0.5"}
    assert result["dataset"]["records"] >= 12 and result["dataset"]["feedback_pairs"] == 12

    # Every config trained on the same pairs and was scored on the same held-out ones.
    assert {(r["train_pairs"], r["eval_pairs"]) for r in rows.values()} == {(result["dataset"]["records"] - 1, 1)}
    assert all(r["steps"] >= 1 and r["eval_loss"] is not None and r["eval_reward_accuracy"] is not None for r in rows.values())

    # The warmup ratio reaches the trainer: the first step's learning rate is below the peak with warmup, not without.
    def first_lr(name: str) -> float:
        return read_json(out / "configs" / name / "train" / "metrics.json")["steps"][0]["learning_rate"]
    assert first_lr("lr0.01-ep1-wu0") == pytest.approx(1e-2)
    assert first_lr("lr0.01-ep1-wu0.5") < 1e-2

    # Only the config with the lowest held-out loss is judged, by the checklist judge against the base model.
    best = min(rows.values(), key=lambda r: r["eval_loss"])
    judged = [r for r in rows.values() if r["win_rate"] is not None]
    assert [r["config"] for r in judged] == [best["config"]]
    assert best["eval_judge"] == "checklist" and best["n"] == 60 and 0 <= best["ci_low"] <= best["win_rate"] <= best["ci_high"]
    assert len(read_jsonl(out / "base_answers.jsonl")) == 60
    for name in rows:
        assert name in text
    assert "dataset:" in text and "0.693 (ln 2)" in text

    # A second invocation resumes: nothing is trained again; a second judged config reuses the base answers.
    adapter = out / "configs" / best["config"] / "train" / "adapter" / "adapter_model.safetensors"
    mtime = adapter.stat().st_mtime_ns
    argv[argv.index("--judge-top") + 1] = "2"
    assert sweep.main(argv) == 0
    again = json.loads((tmp_path / "sweep.json").read_text())
    assert adapter.stat().st_mtime_ns == mtime
    assert [r["seconds"] for r in again["rows"]] == [r["seconds"] for r in result["rows"]]
    second = sorted(again["rows"], key=lambda r: r["eval_loss"])[1]
    assert second["win_rate"] is not None
    responses = read_jsonl(out / "configs" / second["config"] / "eval" / "responses.jsonl")
    base_keys = {r["key"] for r in read_jsonl(out / "base_answers.jsonl")}
    assert {r["key"] for r in responses if r["role"] == "baseline"} == base_keys


def test_changed_generation_settings_are_refused(tmp_path, tiny_model_dir):
    from dpo_tasks.cli import parse_overrides
    from dpo_tasks.config import ConfigError, load_persona, with_overrides

    sets = tiny_sets(tiny_model_dir)[1::2]
    persona = with_overrides(load_persona("persona_e_mexican_vegan"), parse_overrides(sets))
    from dpo_tasks import pipeline

    rd = RunDir(tmp_path / "data").ensure()
    pipeline._check_run_config(rd, {"persona": persona.id, "config": persona.config.model_dump(mode="json"),
                                    "baseline": "base", "max_steps": None})
    changed = with_overrides(persona, {"generation": {"num_prompts": 3}})
    with pytest.raises(ConfigError, match="different generation settings"):
        sweep.build_dataset(changed, tmp_path / "data")


def test_a_config_spec_is_three_numbers():
    import argparse

    assert sweep.config_spec("5e-4:2:0.1") == (5e-4, 2.0, 0.1)
    with pytest.raises(argparse.ArgumentTypeError, match="LR:EPOCHS:WARMUP"):
        sweep.config_spec("5e-4:2")


@pytest.mark.parametrize("text", ["", "a,b", "1e-4,,x"])
def test_grid_values_must_be_numbers(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="expected"):
        sweep.floats(text)
