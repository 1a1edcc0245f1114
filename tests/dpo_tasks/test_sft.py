"""The optional `sft` stage: which answers it learns from, what it trains, how train starts from it,
and that, off (the default), nothing changes."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from dpo_tasks import pipeline, sft, train
from dpo_tasks.config import ConfigError, check_run_overrides, load_persona, with_overrides
from dpo_tasks.publish import model_card
from dpo_tasks.runs import RunDir, read_json, read_jsonl, write_jsonl

PERSONA = "persona_e_mexican_vegan"
REQUESTS = ["Tacos with beans?", "A quick salsa?", "Vegan pozole for four?", "Corn soup tonight?", "Jackfruit tinga?",
            "Mole for a party?", "Nopales salad?", "Churros without eggs?"]
GOOD = "Ingredients: black beans, corn, lime, cilantro. Steps: 1. Warm the tortillas. 2. Fill and serve."


def labeled_row(i: int, *, variant: str = "a", overall: float = 8.0, **extra) -> dict:
    return {
        "id": f"p{i}", "prompt": REQUESTS[i % len(REQUESTS)] + f" ({i})",
        "chosen": f"{GOOD} ({i})", "rejected": f"Use chicken, cheese and sour cream. ({i})",
        "chosen_variant": variant, "margin": 2.0, "scores_chosen": {"overall": overall}, "scores_rejected": {"overall": 2.0},
        "judge": "rules", "source": "generated", "chosen_cut_off": False, "rejected_cut_off": False, **extra,
    }


def dpo_rows(n: int = 8) -> list[dict]:
    system = "You are a recipe assistant for Mexican vegan users."
    return [
        {"prompt": f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{REQUESTS[i % len(REQUESTS)]} ({i})<|im_end|>\n"
                   "<|im_start|>assistant\n",
         "chosen": f"{GOOD} ({i})<|im_end|>", "rejected": f"Use chicken, cheese and sour cream. ({i})<|im_end|>"}
        for i in range(n)
    ]


def tiny_persona(tiny_model_dir, *, sft_on: bool = True, **sft_settings):
    return with_overrides(load_persona(PERSONA), {
        "model": {"base": str(tiny_model_dir)},
        "training": {"batch_size": 2, "grad_accum": 1, "epochs": 1, "learning_rate": 1e-2, "max_length": 128,
                     "max_prompt_length": 96, "lora_r": 4, "lora_alpha": 8},
        "sft": {"enabled": sft_on, "epochs": 2, "learning_rate": 5e-2, "batch_size": 2, "max_length": 128, **sft_settings},
    })


def logits(model_dir, adapter, text: str):
    import torch

    from dpo_tasks.models import load_policy

    model, tokenizer = load_policy(str(model_dir), adapter, device="cpu")
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def test_examples_are_the_strong_variants_uncut_answers_best_scored_first(smol_tokenizer_dir):
    from dpo_tasks.models import load_tokenizer

    rows = [
        labeled_row(0, overall=6.0),
        labeled_row(1, overall=9.5),
        labeled_row(2, variant="b"),  # the generic prompt's answer won
        labeled_row(3, chosen_cut_off=True),
        {**labeled_row(4), "source": "feedback", "chosen_variant": None},
        labeled_row(5, overall=7.0, chosen="  "),
        labeled_row(6, overall=9.0, chosen="word " * 400),  # over sft.max_length tokens
        labeled_row(7, overall=8.0),
        labeled_row(8, overall=3.0),
    ]
    persona = with_overrides(load_persona(PERSONA), {"sft": {"enabled": True, "max_examples": 3, "max_length": 200}})
    examples, skipped = sft.select_examples(persona, rows, load_tokenizer(str(smol_tokenizer_dir)))

    assert [e["id"] for e in examples] == ["p1", "p7", "p0"]
    assert dict(skipped) == {"weak_variant": 1, "cut_off": 1, "feedback": 1, "empty": 1, "over_max_length": 1, "over_max_examples": 1}
    first = examples[0]
    # The serving system prompt (what users' requests come with), the request, one closed assistant turn.
    assert first["prompt"].startswith("<|im_start|>system\nYou are a recipe assistant for")
    assert first["prompt"].endswith("A quick salsa? (1)<|im_end|>\n<|im_start|>assistant\n")
    assert first["completion"] == f"{GOOD} (1)<|im_end|>" and first["score"] == 9.5

    # With a floor, "best of the run" must also be good enough.
    strict = with_overrides(persona, {"sft": {"min_score": 7.5}})
    examples, skipped = sft.select_examples(strict, rows, load_tokenizer(str(smol_tokenizer_dir)))
    assert [e["id"] for e in examples] == ["p1", "p7"] and skipped["under_min_score"] == 2  # p0 6.0, p8 3.0 (p5 is empty)


def test_stage_trains_an_adapter_that_changes_the_models_answers(tiny_model_dir, tmp_path):
    rd = RunDir(tmp_path / "run").ensure()
    write_jsonl(rd.labeled, [labeled_row(i) for i in range(6)] + [labeled_row(6, variant="b")])
    summary = sft.run(tiny_persona(tiny_model_dir), rd)

    assert summary["examples"] == 6 and summary["skipped_examples"]["weak_variant"] == 1
    assert summary["steps"] == 6  # 6 examples / batch 2, two epochs
    assert summary["final_loss"] < summary["first_loss"], "SFT should fit the answers it is shown"
    assert (rd.sft_adapter / "adapter_config.json").is_file() and len(read_jsonl(rd.sft / "sft.jsonl")) == 6
    assert read_json(rd.stage_summary("sft")) == summary
    assert json.loads((rd.sft_adapter / "adapter_config.json").read_text())["r"] == 4  # training.lora_r: DPO continues it
    text = read_jsonl(rd.sft / "sft.jsonl")[0]["prompt"]
    assert not logits(tiny_model_dir, None, text).allclose(logits(tiny_model_dir, str(rd.sft_adapter), text), atol=1e-4)
    assert pipeline.is_complete(rd, "sft")


def test_train_continues_the_sft_adapter_and_keeps_it_as_reference(tiny_model_dir, tmp_path):
    import yaml

    rd = RunDir(tmp_path / "run").ensure()
    write_jsonl(rd.labeled, [labeled_row(i) for i in range(4)])
    write_jsonl(rd.dpo, dpo_rows(4))
    persona = tiny_persona(tiny_model_dir)
    sft.run(persona, rd, max_steps=2)
    summary = train.run(persona, rd, max_steps=1)

    assert summary["started_from"] == "sft stage adapter"
    effective = yaml.safe_load((rd.train / "config.yaml").read_text())
    assert effective["model"]["sft_adapter"] == str(rd.sft_adapter) and effective["reference"] == "sft_adapter"
    # The persona the run was given is unchanged: evaluation's baseline stays the model the run started from.
    assert persona.config.model.sft_adapter is None
    from safetensors.torch import load_file

    dpo = load_file(str(rd.adapter / "adapter_model.safetensors"))
    start = load_file(str(rd.sft_adapter / "adapter_model.safetensors"))
    assert set(dpo) == set(start)
    assert any(not dpo[k].equal(start[k]) for k in dpo), "one DPO step moves the adapter it started from"


def test_disabled_trains_nothing_and_train_is_unchanged(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    off = tiny_persona(tiny_model_dir, sft_on=False)
    rd = RunDir(tmp_path / "off").ensure()
    write_jsonl(rd.labeled, [labeled_row(i) for i in range(4)])
    write_jsonl(rd.dpo, dpo_rows(4))
    summary = sft.run(off, rd)
    assert summary["skipped"] and "sft.enabled is false" in summary["reason"]
    assert not rd.sft_adapter.exists() and pipeline.is_complete(rd, "sft")
    assert model_card(off, rd, run_id="r1", created=datetime.now(timezone.utc))["sft_stage"] is None
    assert train.run(off, rd, max_steps=2)["started_from"] == "base"

    # The same training in a run dir that never heard of the stage: the same adapter, bit for bit.
    plain = RunDir(tmp_path / "plain").ensure()
    write_jsonl(plain.dpo, dpo_rows(4))
    train.run(off, plain, max_steps=2)
    a, b = load_file(str(rd.adapter / "adapter_model.safetensors")), load_file(str(plain.adapter / "adapter_model.safetensors"))
    assert set(a) == set(b) and all(a[k].equal(b[k]) for k in a)


def test_enabled_without_usable_answers_or_without_its_adapter_is_a_clear_error(tiny_model_dir, tmp_path):
    rd = RunDir(tmp_path / "run").ensure()
    write_jsonl(rd.labeled, [labeled_row(0, variant="b"), labeled_row(1, chosen_cut_off=True)])
    write_jsonl(rd.dpo, dpo_rows(4))
    persona = tiny_persona(tiny_model_dir)
    with pytest.raises(ConfigError, match=r"no usable example among 2 labeled pairs.*'weak_variant': 1, 'cut_off': 1.*sft.enabled=false"):
        sft.run(persona, rd)
    with pytest.raises(ConfigError, match=r"sft.enabled is true but .*sft/adapter' holds no SFT adapter: run the sft stage first"):
        train.run(persona, rd)


@pytest.mark.parametrize(
    ("settings", "fragments"),
    [
        pytest.param({"epochs": 0}, ["sft.epochs", "0", "greater than 0"], id="epochs-zero"),
        pytest.param({"learning_rate": 2}, ["sft.learning_rate", "2", "less than 1"], id="learning-rate"),
        pytest.param({"max_examples": 0}, ["sft.max_examples", "greater than or equal to 1"], id="max-examples"),
        pytest.param({"min_score": 11}, ["sft.min_score", "11", "less than or equal to 10"], id="min-score-off-scale"),
        pytest.param({"enabled": "sometimes"}, ["sft.enabled", "'sometimes'"], id="enabled-not-bool"),
        pytest.param({"epoch": 2}, ["unknown field 'sft.epoch'"], id="misspelt"),
    ],
)
def test_bad_sft_settings_name_the_field_and_value(settings, fragments):
    with pytest.raises(ConfigError) as err:
        with_overrides(load_persona(PERSONA), {"sft": settings})
    for fragment in fragments:
        assert fragment in str(err.value)


def test_a_run_may_turn_sft_on_and_tune_it():
    from dpo_tasks.cli import parse_overrides

    check_run_overrides({"sft": {"enabled": True, "epochs": 1, "max_examples": 10}}, where="run conf")
    persona = with_overrides(load_persona(PERSONA), parse_overrides(["sft.enabled=true", "sft.epochs=1"]))
    assert persona.config.sft.enabled and persona.config.sft.epochs == 1
    assert not load_persona(PERSONA).config.sft.enabled, "off unless turned on"


def _settings(persona):
    return {"persona": PERSONA, "config": persona.config.model_dump(mode="json"), "baseline": "base", "max_steps": None}


def test_resume_skips_a_finished_sft_and_new_sft_settings_rerun_from_it(tmp_path):
    persona = with_overrides(load_persona(PERSONA), {"sft": {"enabled": True}})
    rd = RunDir(tmp_path / "run").ensure()
    pipeline._check_run_config(rd, _settings(persona))
    for stage in pipeline.STAGES:
        rd.stage_summary(stage).parent.mkdir(exist_ok=True)
        rd.stage_summary(stage).write_text('{"skipped": false}')
    (rd.sft_adapter).mkdir(parents=True)
    (rd.sft_adapter / "adapter_config.json").write_text("{}")
    assert pipeline.is_complete(rd, "sft")
    (rd.sft_adapter / "adapter_config.json").unlink()
    assert not pipeline.is_complete(rd, "sft"), "a summary without its adapter is not a finished stage"

    pipeline._check_run_config(rd, _settings(with_overrides(persona, {"sft": {"learning_rate": 1e-3}})))
    kept = [s for s in pipeline.STAGES if rd.stage_summary(s).exists()]
    assert kept == ["generate", "label", "format"]


def test_a_run_dir_from_before_the_stage_resumes_without_rerunning_training(tmp_path):
    persona = load_persona(PERSONA)
    rd = RunDir(tmp_path / "run").ensure()
    old = _settings(persona)
    del old["config"]["sft"]
    (rd.root / "run_config.json").write_text(json.dumps(old))
    for stage in set(pipeline.STAGES) - {"sft"}:
        rd.stage_summary(stage).parent.mkdir(exist_ok=True)
        rd.stage_summary(stage).write_text("{}")
    pipeline._check_run_config(rd, _settings(persona))
    assert all(rd.stage_summary(s).exists() for s in set(pipeline.STAGES) - {"sft"})


# --- in the Airflow DAG --------------------------------------------------------------------------


def _run(tmp_path, *sets: str, runner: str = "local") -> dict:
    from dpo_tasks.config import default_personas_path
    from dpo_tasks.orchestration import tasks

    return {"persona": PERSONA, "namespace": PERSONA, "run_id": "r1", "run_dir": str(tmp_path), "runner": runner,
            "args": tasks.common_args(PERSONA, default_personas_path(), tmp_path, list(sets))}


@pytest.mark.parametrize("runner", ["local", "kubernetes"])
def test_the_persona_dag_runs_sft_between_format_and_train(runner):
    from dpo_tasks.orchestration.factory import build_persona_dag

    persona = with_overrides(load_persona(PERSONA), {"sft": {"enabled": True}, "runner": runner,
                                                     "kubernetes": {"image": "registry.example/persona-dpo-trainer:1.0.0"}})
    dag = build_persona_dag(persona)
    task = dag.get_task("sft")
    assert dag.get_task("format").downstream_task_ids == {"sft", "version_data"}
    assert task.downstream_task_ids == {"train"}
    # A skipped (disabled) sft lets train run; a failed one does not.
    assert dag.get_task("train").trigger_rule == "none_failed"
    assert type(task).__name__ == ("StagePodOperator" if runner == "kubernetes" else "StageOperator")
    assert dag.params["sft"] is True  # the trigger form's default follows the persona's config


def test_the_community_dag_has_no_sft(tmp_path):
    from dpo_tasks.config import load_personas
    from dpo_tasks.orchestration.factory import build_custom_dag

    dag = build_custom_dag(load_personas())
    assert "sft" not in dag.task_ids and dag.get_task("train").trigger_rule == "all_success"


def test_disabled_sft_task_is_skipped_before_any_subprocess_or_pod(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    from dpo_tasks.orchestration import tasks
    from dpo_tasks.orchestration.pod import StagePodOperator

    def must_not_run(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(tasks, "run_cli", must_not_run)
    monkeypatch.setattr(tasks, "stage_pod_inputs", must_not_run)
    with pytest.raises(AirflowSkipException, match="sft.enabled is false"):
        tasks.run_stage("sft", _run(tmp_path))
    with pytest.raises(AirflowSkipException, match="sft.enabled is false"):
        StagePodOperator(task_id="sft", stage="sft", run=_run(tmp_path, runner="kubernetes")).execute({})
    # Turned on by the run's conf, it runs (here: reaches the CLI call).
    with pytest.raises(AssertionError, match="work started"):
        tasks.run_stage("sft", _run(tmp_path, "sft.enabled=true"))
    assert tasks.skip_reason("train", _run(tmp_path)) is None
    assert not tasks.runs_on_pod("sft", _run(tmp_path, runner="kubernetes"))
    assert tasks.runs_on_pod("sft", _run(tmp_path, "sft.enabled=true", runner="kubernetes"))


def test_pipeline_runs_sft_then_dpo_from_it_and_resumes_without_redoing_either(tiny_model_dir, tmp_path):
    from dpo_tasks.cli import parse_overrides
    from dpo_tasks.runs import write_json

    settings = [f"model.base={tiny_model_dir}", "evaluation.max_new_tokens=8", "training.epochs=1", "training.batch_size=2",
                "training.grad_accum=1", "training.max_length=128", "training.max_prompt_length=96", "sft.enabled=true",
                "sft.batch_size=2", "sft.max_length=128", "gate.min_win_rate_lower_bound=1.0"]
    persona = with_overrides(load_persona(PERSONA), parse_overrides(settings))
    rd = RunDir(tmp_path / "run").ensure()
    # generate, label and format finished earlier (a tiny random model's own pairs mostly tie).
    write_jsonl(rd.prompts, [{"id": f"p{i}", "prompt": REQUESTS[i], "source": "pool"} for i in range(4)])
    write_jsonl(rd.variants, [{"id": f"p{i}", "prompt": REQUESTS[i], "variant_a": GOOD, "variant_b": "chicken"} for i in range(4)])
    write_jsonl(rd.labeled, [labeled_row(i) for i in range(4)])
    write_jsonl(rd.dpo, dpo_rows(4))
    for stage in ("generate", "label", "format"):
        write_json(rd.stage_summary(stage), {"stage": stage})
    pipeline._check_run_config(rd, {"persona": PERSONA, "config": persona.config.model_dump(mode="json"), "baseline": "base",
                                    "max_steps": 2})

    summary = pipeline.run(persona, rd, store_uri=str(tmp_path / "store"), max_steps=2)
    assert set(summary["seconds"]) == {"sft", "train", "evaluate", "gate"}
    assert summary["stages"]["sft"]["examples"] == 4 and summary["stages"]["train"]["started_from"] == "sft stage adapter"
    # The baseline is the model the run started from, not the SFT model.
    assert summary["stages"]["evaluate"]["baseline"]["label"] == "base model"
    (line,) = [ln for ln in pipeline.format_summary(summary).splitlines() if ln.lstrip().startswith("sft ")]
    assert "4 strong-prompt answers of 4 labeled pairs (skipped none), 2 steps" in line

    again = pipeline.run(persona, rd, store_uri=str(tmp_path / "store"), max_steps=2)
    assert again["seconds"] == {} and again["stages"]["sft"]["resumed"]
    # A published version's card says that DPO started from this run's SFT, on what.
    card = model_card(persona, rd, run_id="r1", created=datetime.now(timezone.utc))
    assert card["sft_stage"]["examples"] == 4 and card["sft_stage"]["settings"]["enabled"] is True
