from __future__ import annotations

import json

import pytest
import yaml

from dpo_tasks import train
from dpo_tasks.config import ConfigError, load_persona, with_overrides
from dpo_tasks.runs import RunDir, read_json, write_jsonl

PERSONA = "persona_e_mexican_vegan"
SYSTEM = "You are a recipe assistant for Mexican vegan users."
REQUESTS = ["Tacos with beans?", "A quick salsa?", "Vegan pozole for four?", "Corn soup tonight?", "Jackfruit tinga?", "Mole for a party?", "Nopales salad?", "Churros without eggs?"]


def chatml(system: str, user: str) -> str:
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def dpo_rows(n: int = 8) -> list[dict[str, str]]:
    return [
        {
            "prompt": chatml(SYSTEM, REQUESTS[i % len(REQUESTS)] + f" ({i})"),
            "chosen": f"Ingredients: black beans, corn, lime, cilantro. Steps: 1. Cook. 2. Serve. ({i})<|im_end|>",
            "rejected": f"Use chicken, cheese and sour cream. ({i})<|im_end|>",
        }
        for i in range(n)
    ]


def tiny_persona(tiny_model_dir, **training):
    return with_overrides(
        load_persona(PERSONA),
        {
            "model": {"base": str(tiny_model_dir)},
            "training": {"batch_size": 2, "grad_accum": 1, "epochs": 1, "learning_rate": 1e-2, "max_length": 128, "max_prompt_length": 96, "lora_r": 4, "lora_alpha": 8, **training},
        },
    )


def lora_tensors(adapter_dir):
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(adapter_dir / "adapter_model.safetensors")).items() if "lora_" in k}


@pytest.mark.parametrize("precompute", [pytest.param(True, id="precomputed-reference"), pytest.param(False, id="reference-on-the-fly")])
def test_training_logs_loss_changes_the_adapter_and_writes_its_files(tiny_model_dir, tmp_path, precompute):
    rd = RunDir(tmp_path / "run")
    write_jsonl(rd.ensure().dpo, dpo_rows())
    summary = train.run(tiny_persona(tiny_model_dir, precompute_ref_log_probs=precompute), rd)

    metrics = read_json(rd.train / "metrics.json")
    assert len(metrics["steps"]) == summary["steps"] == 4  # 8 pairs / batch 2, one epoch
    for step in metrics["steps"]:
        for key in ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"):
            assert isinstance(step[key], float), key
    assert metrics["steps"][-1]["rewards/margins"] > metrics["steps"][0]["rewards/margins"], "DPO should separate chosen from rejected"

    # LoRA B starts at zero: any non-zero B means the optimizer moved the adapter.
    tensors = lora_tensors(rd.adapter)
    assert {k for k in tensors if "lora_B" in k}
    assert all(v.abs().sum() > 0 for k, v in tensors.items() if "lora_B" in k)
    assert not any(".ref." in k for k in tensors), "TRL's reference copy must not be saved"
    adapter_config = json.loads((rd.adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4 and sorted(adapter_config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]

    effective = yaml.safe_load((rd.train / "config.yaml").read_text())
    assert effective["reference"] == "base"
    assert effective["training"]["precompute_ref_log_probs"] is precompute
    assert effective["runtime"] | {"device": "cpu", "bf16": False, "optim": "adamw_torch"} == effective["runtime"]
    assert effective["data"]["pairs"] == 8
    assert read_json(rd.stage_summary("train")) == summary
    assert not (rd.train / "trainer").exists() and not (rd.train / ".adapter.tmp").exists()


@pytest.mark.parametrize(
    "n, held",
    [pytest.param(9, 0, id="below-ten-nothing-held"), pytest.param(10, 1, id="ten-one-held"), pytest.param(25, 2, id="25-two-held"),
     pytest.param(500, 50, id="500-ten-percent")],
)
def test_split_holds_out_ten_percent_once_there_are_ten_pairs(n, held):
    rows = [{"prompt": str(i), "chosen": "c", "rejected": "r"} for i in range(n)]
    kept, out = train.split_holdout(rows, seed=42)
    assert len(out) == held and len(kept) + len(out) == n
    assert not {r["prompt"] for r in kept} & {r["prompt"] for r in out}
    assert train.split_holdout(rows, seed=42) == (kept, out)
    assert n < 25 or train.split_holdout(rows, seed=7)[1] != out


def test_epoch_means_average_each_epochs_steps():
    steps = [{"epoch": 0.5, "loss": 0.7, "rewards/accuracies": 0.0, "rewards/margins": 0.0},
             {"epoch": 1.0, "loss": 0.5, "rewards/accuracies": 1.0, "rewards/margins": 0.2},
             {"epoch": 1.5, "loss": 0.3, "rewards/accuracies": 0.5, "rewards/margins": 0.4},
             {"epoch": 2.0, "loss": 0.1, "rewards/accuracies": 1.0, "rewards/margins": 0.6}]
    assert train.epoch_means(steps) == [
        {"epoch": 1, "steps": 2, "loss": 0.6, "reward_accuracy": 0.5, "reward_margin": 0.1},
        {"epoch": 2, "steps": 2, "loss": 0.2, "reward_accuracy": 0.75, "reward_margin": 0.5},
    ]


def test_held_out_pairs_give_eval_loss_and_the_summary_reports_epoch_means(tiny_model_dir, tmp_path):
    rd = RunDir(tmp_path / "run")
    write_jsonl(rd.ensure().dpo, dpo_rows(12))
    summary = train.run(tiny_persona(tiny_model_dir, epochs=2), rd)
    metrics = read_json(rd.train / "metrics.json")
    assert (summary["pairs"], summary["train_pairs"], summary["eval_pairs"]) == (12, 11, 1)
    assert summary["steps"] == 12  # 11 pairs / batch 2 = 6 steps per epoch, 2 epochs
    assert [e["epoch"] for e in summary["epoch_means"]] == [1, 2] and [e["steps"] for e in summary["epoch_means"]] == [6, 6]
    last_epoch = [s["rewards/accuracies"] for s in metrics["steps"][6:]]
    assert summary["reward_accuracy"] == pytest.approx(sum(last_epoch) / 6, abs=1e-6)
    assert len(metrics["evaluations"]) == 2  # one per epoch
    assert isinstance(summary["eval_loss"], float) and 0.0 <= summary["eval_reward_accuracy"] <= 1.0
    assert summary["eval_loss"] == metrics["evaluations"][-1]["eval_loss"]
    effective = yaml.safe_load((rd.train / "config.yaml").read_text())
    assert (effective["data"]["train_pairs"], effective["data"]["eval_pairs"]) == (11, 1)


@pytest.fixture
def sft_adapter(tiny_model_dir, tmp_path):
    """A non-trivial SFT adapter (random LoRA B) of a different shape than the persona's LoRA config."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    config = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.3, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    model.save_pretrained(tmp_path / "sft")
    return tmp_path / "sft"


def completion_logps(model, examples, which: str):
    """Sum of log-probs of each example's completion tokens, computed independently of TRL."""
    import torch

    out = []
    with torch.no_grad():
        for ex in examples:
            ids = torch.tensor([ex["prompt_ids"] + ex[f"{which}_ids"]])
            logps = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            targets = ids[0, 1:]
            per_token = logps.gather(-1, targets[:, None])[:, 0]
            out.append(per_token[len(ex["prompt_ids"]) - 1 :].sum().item())
    return torch.tensor(out)


@pytest.mark.parametrize("precompute", [pytest.param(True, id="precomputed-reference"), pytest.param(False, id="reference-on-the-fly")])
def test_reference_is_the_sft_policy_not_the_bare_base(tiny_model_dir, sft_adapter, tmp_path, precompute):
    import torch

    from dpo_tasks.models import load_policy

    persona = tiny_persona(tiny_model_dir, precompute_ref_log_probs=precompute)
    persona = with_overrides(persona, {"model": {"sft_adapter": str(sft_adapter)}})
    trainer = train.build_trainer(persona, dpo_rows(4), tmp_path / "out", max_steps=2)
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    eos = trainer.processing_class.eos_token_id
    for ex in examples:  # what the model trains on: the rendered prompt, one end-of-turn, nothing re-templated
        assert trainer.processing_class.decode(ex["prompt_ids"]).startswith("<|im_start|>system\n" + SYSTEM)
        assert ex["chosen_ids"][-1] == eos and ex["chosen_ids"][-2] != eos

    sft, _ = load_policy(str(tiny_model_dir), sft_adapter)
    base, _ = load_policy(str(tiny_model_dir))
    expected = {w: completion_logps(sft, examples, w) for w in ("chosen", "rejected")}
    bare = {w: completion_logps(base, examples, w) for w in ("chosen", "rejected")}
    assert not torch.allclose(expected["chosen"], bare["chosen"], atol=1e-2), "the SFT adapter must matter for this test"

    trainer.train()  # the reference must stay the SFT policy while the adapter trains
    if precompute:
        used = {w: torch.tensor([ex[f"ref_{w}_logps"] for ex in examples]) for w in ("chosen", "rejected")}
    else:
        batch = trainer.data_collator(examples)
        chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)
        used = {"chosen": chosen, "rejected": rejected}
    for w in ("chosen", "rejected"):
        torch.testing.assert_close(used[w], expected[w], atol=1e-3, rtol=1e-4)

    trainer.model.eval()
    trained = completion_logps(trainer.model, examples, "chosen")
    assert not torch.allclose(trained, expected["chosen"], atol=1e-3), "the continued adapter should have moved"


def test_continuing_an_sft_adapter_saves_that_adapter_trained_further(tiny_model_dir, sft_adapter, tmp_path):
    rd = RunDir(tmp_path / "run")
    write_jsonl(rd.ensure().dpo, dpo_rows(4))
    persona = with_overrides(tiny_persona(tiny_model_dir), {"model": {"sft_adapter": str(sft_adapter)}})
    train.run(persona, rd, max_steps=2)

    adapter_config = json.loads((rd.adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == 2 and sorted(adapter_config["target_modules"]) == ["q_proj", "v_proj"]
    before, after = lora_tensors(sft_adapter), lora_tensors(rd.adapter)
    assert before.keys() == after.keys()
    assert any(not (before[k] == after[k]).all() for k in before)
    effective = yaml.safe_load((rd.train / "config.yaml").read_text())
    assert effective["reference"] == "sft_adapter" and effective["lora"]["r"] == 2


def test_dataset_rows_are_rendered_checked_and_bad_ones_reported(smol_tokenizer_dir, tmp_path):
    from dpo_tasks.models import load_tokenizer

    tokenizer = load_tokenizer(str(smol_tokenizer_dir))
    persona = with_overrides(load_persona(PERSONA), {"training": {"max_length": 128, "max_prompt_length": 40}})
    good = dpo_rows(1)[0]
    lines = [
        json.dumps(good),
        json.dumps({"prompt": "Tacos?", "chosen": "Bean tacos.", "rejected": "Beef tacos."}),
        "{not json",
        json.dumps({**good, "chosen": good["chosen"] + "\n\n"}),
        json.dumps({**good, "prompt": chatml(SYSTEM, "word " * 60)}),
        json.dumps({"prompt": "x", "chosen": "same", "rejected": "same"}),
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rows, skipped = train.load_dataset_rows(path, tokenizer, persona)

    assert rows[0] == good
    assert rows[1]["prompt"].startswith("<|im_start|>system\nYou are a recipe assistant for Mexican vegan")
    assert rows[1]["prompt"].endswith("<|im_start|>user\nTacos?<|im_end|>\n<|im_start|>assistant\n")
    assert rows[1]["chosen"] == "Bean tacos.<|im_end|>"
    assert rows[2]["chosen"] == good["chosen"], "whitespace after the end-of-turn would make TRL add a second one"
    assert len(rows) == 3
    assert [s.split(":")[0] for s in skipped] == ["line 3", "line 6", "line 5"]
    assert "max_prompt_length=40" in skipped[2]


def test_no_usable_record_is_a_clear_error(tiny_model_dir, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "x"}\n')
    with pytest.raises(ConfigError, match="no usable record"):
        train.run(tiny_persona(tiny_model_dir), tmp_path / "run", data=path)
    with pytest.raises(ConfigError, match="training data not found"):
        train.run(tiny_persona(tiny_model_dir), tmp_path / "run")


def test_cli_train(tiny_model_dir, tmp_path, capsys):
    from dpo_tasks.cli import main

    data = write_jsonl(tmp_path / "community.jsonl", dpo_rows(4))
    rc = main([
        "train", "--persona", PERSONA, "--run-dir", str(tmp_path / "run"), "--data", str(data), "--max-steps", "1",
        "--set", f"model.base={json.dumps(str(tiny_model_dir))}", "--set", "training.batch_size=2", "--set", "training.grad_accum=1",
    ])
    assert rc == 0
    assert "train: 4 pairs (0 skipped), 1 steps" in capsys.readouterr().out
    assert (tmp_path / "run" / "train" / "adapter" / "adapter_model.safetensors").exists()


def test_4bit_config_loads_on_a_cpu_only_machine():
    # The Airflow worker validates the config of a run whose training happens on a GPU pod.
    persona = with_overrides(load_persona(PERSONA), {"training": {"quantization": "4bit"}})
    assert persona.config.training.quantization == "4bit"
    with pytest.raises(ConfigError, match=r"training\.quantization' = '8bit' is invalid"):
        with_overrides(load_persona(PERSONA), {"training": {"quantization": "8bit"}})


def test_4bit_without_cuda_is_refused_before_anything_loads(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # Neither the model nor the data exists: the refusal must come before either is looked at.
    persona = with_overrides(load_persona(PERSONA), {"model": {"base": str(tmp_path / "no-model")}, "training": {"quantization": "4bit"}})
    with pytest.raises(ConfigError, match=r"training\.quantization='4bit' needs a CUDA GPU .* runs on 'cpu'"):
        train.run(persona, tmp_path / "run", data=tmp_path / "missing.jsonl")
    assert not (tmp_path / "run").exists()


def test_4bit_refusal_through_the_cli_is_one_line(tmp_path, monkeypatch, capsys):
    import torch

    from dpo_tasks.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = main(["train", "--persona", PERSONA, "--run-dir", str(tmp_path / "run"), "--set", "training.quantization=4bit"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: training.quantization='4bit' needs a CUDA GPU") and "Traceback" not in err


def test_load_policy_refuses_4bit_on_cpu(tmp_path):
    from dpo_tasks.models import load_policy

    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        load_policy(str(tmp_path / "no-model"), device="cpu", quantization="4bit")
