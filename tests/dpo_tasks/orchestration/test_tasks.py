"""The `prepare` tasks: what a trigger (form, conf, feedback window, community dataset) turns into,
and the clear, non-retried failure a bad one gets. Airflow's task context is the only thing faked."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from airflow.sdk import ParamsDict
from airflow.sdk.exceptions import AirflowFailException

from dpo_tasks.config import load_persona
from dpo_tasks.orchestration import tasks
from dpo_tasks.orchestration.params import persona_params
from dpo_tasks.validate import toy_records

PERSONA = "persona_d_japanese_lowsodium"


@pytest.fixture
def trigger(monkeypatch, tmp_path):
    """trigger(params, conf): the context a task of that run sees."""
    monkeypatch.setenv("PERSONA_DPO_RUNS", str(tmp_path / "runs"))

    def make(params: dict, conf: dict | None = None, run_id: str = "manual__2026-11-22T03:00:00+00:00"):
        ctx = {"params": params, "dag_run": SimpleNamespace(conf=conf or {}), "run_id": run_id}
        monkeypatch.setattr(tasks, "_context", lambda: ctx)

    return make


def form(**values) -> dict:
    params = ParamsDict(persona_params(load_persona(PERSONA).config))
    params.update(values)
    return params.dump()


def test_persona_run_description(trigger, tmp_path):
    trigger(form(num_prompts=5, judge="groq"), {"feedback": {"persona_id": PERSONA, "from_id": 10, "to_id": 42}})
    run = tasks.prepare_persona_run(PERSONA)
    run_dir = tmp_path / "runs" / PERSONA / "manual__2026-11-22T03_00_00_00_00"
    assert run["run_dir"] == str(run_dir)
    assert (run_dir / "personas.yaml").exists()
    assert run["args"][:6] == ["--persona", PERSONA, "--personas-file", str(run_dir / "personas.yaml"), "--run-dir", str(run_dir)]
    sets = [run["args"][i + 1] for i, a in enumerate(run["args"]) if a == "--set"]
    assert "generation.num_prompts=5" in sets and 'labeling.judge="groq"' in sets
    assert run["feedback"] == {"persona_id": PERSONA, "from_id": 10, "to_id": 42}
    assert json.loads((run_dir / "trigger.json").read_text())["feedback"]["to_id"] == 42
    # Answers (the model: a pod with the kubernetes runner) and judging (the worker) are two calls.
    tail = ["--baseline", "latest", "--namespace", PERSONA, "--part"]
    assert tasks.stage_argv("evaluate_answers", run)[-6:] == [*tail, "answers"]
    assert tasks.stage_argv("evaluate", run)[-6:] == [*tail, "judge"]
    # The runner is the deployment's (personas.yaml), whatever the form says.
    assert run["runner"] == "local" and run["dag_id"] == f"dpo_{PERSONA}"


@pytest.mark.parametrize(
    "params, conf, match",
    [
        pytest.param({"overrides": {"training.epochs": -1}}, None, r"training\.epochs.*-1", id="bad-override-value"),
        pytest.param({"overrides": {"training.epoch": 2}}, None, r"unknown setting\(s\) 'training\.epoch'", id="misspelt-override"),
        pytest.param({}, {"feedback": {"persona_id": "persona_a_korean_spicy", "from_id": 1, "to_id": 2}},
                     r"feedback.*persona_d_japanese_lowsodium", id="feedback-for-another-persona"),
    ],
)
def test_bad_trigger_fails_at_once_naming_the_problem(trigger, params, conf, match):
    trigger(form(**params), conf)
    with pytest.raises(AirflowFailException, match=match):
        tasks.prepare_persona_run(PERSONA)


def custom_form(**values) -> dict:
    base = {"communityId": None, "dataset": None, "dataset_uri": None, "persona": PERSONA,
            "eval_judge": "rules", "epochs": 1, "min_win_rate_lower_bound": 0.5, "dry_run": False, "overrides": {}}
    return base | values


def test_community_dataset_from_a_uri_keeps_good_rows_and_names_bad_ones(trigger, tmp_path, caplog, monkeypatch):
    rows = toy_records(load_persona(PERSONA), 3)
    lines = [json.dumps(rows[0]), "{not json", json.dumps(rows[1]), json.dumps({"prompt": "p", "chosen": "x"}), json.dumps(rows[2])]
    monkeypatch.setenv("PERSONA_DPO_LOCAL_UPLOAD_ROOT", str(tmp_path / "uploads"))
    path = tmp_path / "uploads" / "tofu-club" / "community.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    trigger(custom_form(communityId="tofu-club", dataset_uri=str(path)))
    with caplog.at_level("WARNING"):
        run = tasks.prepare_custom_run()
    assert run["namespace"] == "policies/tofu-club" and run["persona"] == PERSONA
    written = [json.loads(ln) for ln in open(f"{run['run_dir']}/dpo.jsonl")]
    assert written == rows
    assert run["dataset"] == {"community": "tofu-club", "rows": 5, "usable": 3, "problems": 2}
    rejected = [r.getMessage() for r in caplog.records if "dataset row rejected" in r.getMessage()]
    assert rejected == [
        "dataset row rejected: line 2: not valid JSON: Expecting property name enclosed in double quotes",
        "dataset row rejected: line 4: missing field 'rejected'",
    ]


@pytest.mark.parametrize(
    "values, match",
    [
        pytest.param({"dataset": [{"prompt": "a", "chosen": "b", "rejected": "c"}]}, r"communityId.*None", id="no-community"),
        pytest.param({"communityId": "../etc", "dataset": []}, r"communityId.*'\.\./etc'", id="path-in-community"),
        pytest.param({"communityId": "c1"}, "exactly one of 'dataset'", id="no-dataset"),
        pytest.param({"communityId": "c1", "dataset": [], "dataset_uri": "gs://b/x.jsonl"}, "exactly one of", id="both"),
        pytest.param({"communityId": "c1", "dataset_uri": "/nonexistent/data.jsonl"}, "only gs:// URIs", id="local-uri-not-allowed"),
        pytest.param({"communityId": "c1", "dataset": [{"prompt": "p", "chosen": "same", "rejected": "same"}]},
                     "no usable row", id="nothing-usable"),
    ],
)
def test_bad_community_conf_fails_at_once(trigger, values, match, monkeypatch):
    monkeypatch.delenv("PERSONA_DPO_LOCAL_UPLOAD_ROOT", raising=False)
    trigger(custom_form(**values))
    with pytest.raises(AirflowFailException, match=match):
        tasks.prepare_custom_run()


def test_the_runner_comes_from_the_deployment_not_the_conf(trigger, tmp_path, monkeypatch):
    import yaml

    from dpo_tasks.config import default_personas_path

    raw = yaml.safe_load(default_personas_path().read_text())
    raw["defaults"] |= {"runner": "kubernetes", "kubernetes": {"image": "registry.example/trainer:1.0.0"}}
    personas = tmp_path / "personas.yaml"
    personas.write_text(yaml.safe_dump(raw))
    # A conf that still carries the old form field changes nothing.
    trigger(form() | {"training_runner": "local"})
    assert tasks.prepare_persona_run(PERSONA, str(personas))["runner"] == "kubernetes"
