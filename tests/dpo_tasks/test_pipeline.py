import json

import pytest

from dpo_tasks import cli, pipeline
from dpo_tasks.config import ConfigError, load_persona, with_overrides
from dpo_tasks.runs import RunDir, write_jsonl
from dpo_tasks.store.local import LocalStore

PERSONA = "persona_e_mexican_vegan"


def tiny_settings(tiny_model_dir, threshold):
    return [
        f"model.base={tiny_model_dir}",
        "generation.num_prompts=4", "generation.max_new_tokens=12", "generation.batch_size=4",
        "evaluation.max_new_tokens=8",
        "training.epochs=1", "training.batch_size=2", "training.grad_accum=1",
        "training.max_length=128", "training.max_prompt_length=64",
        f"gate.min_win_rate_lower_bound={threshold}",
    ]


def seed_feedback(rd: RunDir):
    # A random tiny model's two variants are often judged a tie and dropped; feedback
    # pairs (a real input of the pipeline) make sure there is something to train on.
    write_jsonl(rd.feedback_pairs, [
        {"id": f"fb{i}", "prompt": f"Vegan tacos for {i} people", "source": "feedback",
         "chosen": "Black bean tacos: corn tortillas, black beans, avocado, lime. 1. Warm. 2. Fill.",
         "rejected": "Beef tacos with cheese and sour cream."}
        for i in range(4)
    ])


@pytest.mark.slow
def test_run_publishes_then_resumes_without_redoing_work(tmp_path, tiny_model_dir, capsys):
    rd = RunDir(tmp_path / "run").ensure()
    seed_feedback(rd)
    store = tmp_path / "store"
    argv = ["run", "--persona", PERSONA, "--run-dir", str(rd.root), "--store", str(store), "--max-steps", "2"]
    for item in tiny_settings(tiny_model_dir, 0.0):
        argv += ["--set", item]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out

    for path in (rd.prompts, rd.variants, rd.labeled, rd.dpo, rd.adapter / "adapter_config.json", rd.train / "metrics.json",
                 rd.eval / "summary_stats.json", rd.eval / "detailed_results.json", rd.eval / "evaluation_report.html",
                 rd.gate, rd.publish, rd.summary):
        assert path.exists(), path
    summary = json.loads(rd.summary.read_text())
    assert list(summary["stages"]) == list(pipeline.STAGES)
    assert set(summary["seconds"]) == set(pipeline.STAGES)
    assert summary["stages"]["gate"]["decision"] == "promote"
    version = summary["stages"]["publish"]["version"]
    assert LocalStore(store).latest(PERSONA) == version
    card = json.loads((store / PERSONA / version / "model_card.json").read_text())
    assert card["pairs_by_source"].get("feedback") == 4
    for needle in ("prompts", "pairs kept", "reward accuracy", "win rate", "95% CI", "PROMOTE", version, "evaluation_report.html"):
        assert needle in out, needle

    # Everything is complete: a rerun skips every stage and publishes nothing new.
    assert cli.main(argv) == 0
    again = json.loads(rd.summary.read_text())
    assert again["seconds"] == {} and all(s.get("resumed") for s in again["stages"].values())
    assert LocalStore(store).list_versions(PERSONA) == [version]

    # A lost later artifact reruns from that stage on, not from the start.
    (rd.gate).unlink()
    assert cli.main(argv) == 0
    third = json.loads(rd.summary.read_text())
    assert set(third["seconds"]) == {"gate", "publish"}
    assert len(LocalStore(store).list_versions(PERSONA)) == 2

    # A stricter gate on the same run dir reruns only the gate, which now rejects.
    stricter = [a.replace("gate.min_win_rate_lower_bound=0.0", "gate.min_win_rate_lower_bound=1.0") for a in argv]
    assert cli.main(stricter) == 0
    fourth = json.loads(rd.summary.read_text())
    assert set(fourth["seconds"]) == {"gate"} and fourth["stages"]["publish"]["skipped"]
    assert len(LocalStore(store).list_versions(PERSONA)) == 2


@pytest.mark.slow
def test_run_rejected_by_the_gate_skips_publish_with_the_reason(tmp_path, tiny_model_dir):
    rd = RunDir(tmp_path / "run").ensure()
    seed_feedback(rd)
    persona = with_overrides(load_persona(PERSONA), cli.parse_overrides(tiny_settings(tiny_model_dir, 1.0)))
    summary = pipeline.run(persona, rd, store_uri=str(tmp_path / "store"), max_steps=1)
    gate = json.loads(rd.gate.read_text())
    assert gate["decision"] == "reject" and "< threshold 1.000" in gate["reason"]
    assert summary["stages"]["publish"] == {"skipped": True, "reason": f"gate: {gate['reason']}"}
    assert not rd.publish.exists() and LocalStore(tmp_path / "store").list_versions(PERSONA) == []
    assert "skipped (gate: win-rate lower bound" in pipeline.format_summary(summary)


def _settings(persona, **extra):
    return {"persona": PERSONA, "config": persona.config.model_dump(mode="json"), "baseline": "base", "max_steps": None} | extra


def test_resuming_with_other_generation_settings_is_refused(tmp_path):
    persona = load_persona(PERSONA)
    rd = RunDir(tmp_path / "run").ensure()
    pipeline._check_run_config(rd, _settings(persona))
    changed = with_overrides(persona, {"generation": {"num_prompts": 7}})
    with pytest.raises(ConfigError, match=r"generation.num_prompts: 60 -> 7"):
        pipeline.run(changed, rd)


@pytest.mark.parametrize(
    ("overrides", "extra", "first"),
    [
        pytest.param({"gate": {"min_win_rate_lower_bound": 0.3}}, {}, "gate", id="gate-threshold"),
        pytest.param({"training": {"epochs": 1}}, {}, "format", id="training"),
        pytest.param({"labeling": {"min_margin": 2.0}}, {}, "label", id="labeling"),
        pytest.param({}, {"baseline": "latest"}, "evaluate", id="baseline"),
        pytest.param({"feedback": {"min_feedback": 5}}, {}, None, id="irrelevant-to-the-run"),
    ],
)
def test_changed_settings_rerun_from_the_first_affected_stage(tmp_path, overrides, extra, first):
    persona = load_persona(PERSONA)
    rd = RunDir(tmp_path / "run").ensure()
    pipeline._check_run_config(rd, _settings(persona))
    for stage in pipeline.STAGES:
        rd.stage_summary(stage).parent.mkdir(exist_ok=True)
        rd.stage_summary(stage).write_text("{}")
    changed = _settings(with_overrides(persona, overrides), **extra)
    pipeline._check_run_config(rd, changed)
    kept = [s for s in pipeline.STAGES if rd.stage_summary(s).exists()]
    assert kept == list(pipeline.STAGES[: pipeline.STAGES.index(first)] if first else pipeline.STAGES)
    assert json.loads((rd.root / "run_config.json").read_text()) == changed
