"""A user's own prompt pool (generation.prompt_pool / --pool) and the per-run sampling seed."""

from __future__ import annotations

import json
import logging

import pytest

from dpo_tasks import generate
from dpo_tasks.config import ConfigError, check_run_overrides, load_persona, with_overrides
from dpo_tasks.prompts import load_eval_cases, load_prompt_pool
from dpo_tasks.runs import RunDir

PERSONA = "persona_e_mexican_vegan"


@pytest.fixture
def persona():
    return with_overrides(load_persona(PERSONA), {"generation": {"num_prompts": 8}})


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_configured_pool_is_used_and_loses_prompts_close_to_an_evaluation_case(persona, tmp_path):
    case = load_eval_cases(PERSONA)[0]
    pool = write_lines(tmp_path / "mine.jsonl", [
        json.dumps({"id": i, "prompt": f"My own request number {i}: a {dish} for my family."})
        for i, dish in enumerate(["tamale pie", "mole bowl", "pozole", "bean soup", "taco salad"])
    ] + [json.dumps({"id": "leak", "prompt": case["prompt"].replace(".", "!")})])
    mine = with_overrides(persona, {"generation": {"prompt_pool": str(pool)}})
    rd = RunDir(tmp_path / "run").ensure()
    rows, info = generate.load_pool(mine, rd)
    assert [r["id"] for r in rows] == ["0", "1", "2", "3", "4"] and all(r["source"] == "pool" for r in rows)
    assert info == {"pool": str(pool), "pool_rows": 6, "pool_held_out": 1}
    # --pool on the command line wins over the config; no pool at all is the shipped one.
    other = write_lines(tmp_path / "other.jsonl", ['{"id": "x", "prompt": "Vegan tamales for a party of ten?"}'])
    assert [r["id"] for r in generate.load_pool(mine, rd, other)[0]] == ["x"]
    shipped, info = generate.load_pool(persona, rd)
    assert len(shipped) == len(load_prompt_pool(PERSONA)) and info["pool"] == "shipped"


def test_bad_lines_are_reported_with_file_and_line_and_skipped(persona, tmp_path, caplog):
    pool = write_lines(tmp_path / "pool.jsonl", [
        '{"id": "ok1", "prompt": "Vegan tacos for a crowd?"}',
        '{"id": "bad", "prompt": "  "}',
        '{"prompt": "no id here"}',
        "{not json",
        '["a", "list"]',
        "",
        '{"id": "ok1", "prompt": "A duplicate id"}',
        '{"id": "ok2", "prompt": "Mole for a birthday?"}',
    ])
    with caplog.at_level(logging.WARNING):
        rows, _ = generate.load_pool(with_overrides(persona, {"generation": {"prompt_pool": str(pool)}}), RunDir(tmp_path / "r"))
    assert [r["id"] for r in rows] == ["ok1", "ok2"]
    for line, problem in [(2, "'prompt' must be"), (3, "'id' must be"), (4, "not JSON"), (5, "expected an object"), (7, "duplicate id 'ok1'")]:
        assert f"{pool}:{line}: {problem}" in caplog.text


@pytest.mark.parametrize(
    "lines, match",
    [
        pytest.param(None, "no such file", id="missing"),
        pytest.param([], "no usable row", id="empty"),
        pytest.param(["{oops", '{"id": 1}'], "no usable row \\(2 bad lines", id="all-bad"),
    ],
)
def test_a_pool_without_usable_rows_is_an_error_naming_the_file(persona, tmp_path, lines, match):
    path = tmp_path / "pool.jsonl"
    if lines is not None:
        write_lines(path, lines)
    with pytest.raises(ConfigError, match=match) as err:
        generate.load_pool(with_overrides(persona, {"generation": {"prompt_pool": str(path)}}), RunDir(tmp_path / "r"))
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "value, match",
    [
        pytest.param("", "must be a path", id="empty"),
        pytest.param("gs://bucket-only", "must name an object", id="bucket-without-object"),
        pytest.param("https://example.com/pool.jsonl", "only local paths", id="http"),
        pytest.param("pool\n.jsonl", "must be a path", id="control-character"),
    ],
)
def test_prompt_pool_setting_is_validated(persona, value, match):
    with pytest.raises(ConfigError, match=match):
        with_overrides(persona, {"generation": {"prompt_pool": value}})


@pytest.mark.parametrize(
    "pool, env, ok",
    [
        pytest.param("gs://pools-bkt/users/alice.jsonl", {"PERSONA_DPO_POOL_PREFIX": "gs://pools-bkt/users"}, True, id="gs-under-prefix"),
        pytest.param("gs://other/alice.jsonl", {"PERSONA_DPO_POOL_PREFIX": "gs://pools-bkt/users"}, False, id="gs-elsewhere"),
        pytest.param("gs://pools-bkt/users/../secrets.jsonl", {"PERSONA_DPO_POOL_PREFIX": "gs://pools-bkt/users"}, False, id="gs-dot-dot"),
        pytest.param("gs://pools-bkt/users-evil/x.jsonl", {"PERSONA_DPO_POOL_PREFIX": "gs://pools-bkt/users"}, False, id="gs-sibling-prefix"),
        pytest.param("gs://pools-bkt/users/alice.jsonl", {}, False, id="gs-no-prefix-configured"),
        pytest.param("{root}/alice.jsonl", {"PERSONA_DPO_LOCAL_POOL_ROOT": "{root}"}, True, id="local-under-root"),
        pytest.param("{root}/../etc/passwd", {"PERSONA_DPO_LOCAL_POOL_ROOT": "{root}"}, False, id="local-escape"),
        pytest.param("alice.jsonl", {"PERSONA_DPO_LOCAL_POOL_ROOT": "{root}"}, False, id="local-relative"),
        pytest.param("/etc/passwd", {}, False, id="local-no-root-configured"),
    ],
)
def test_a_run_may_name_a_pool_only_where_the_deployment_keeps_them(tmp_path, monkeypatch, pool, env, ok):
    monkeypatch.delenv("PERSONA_DPO_POOL_PREFIX", raising=False)
    monkeypatch.delenv("PERSONA_DPO_LOCAL_POOL_ROOT", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(root=tmp_path))
    overrides = {"generation": {"prompt_pool": pool.format(root=tmp_path)}}
    if ok:
        check_run_overrides(overrides, where="run conf")
    else:
        with pytest.raises(ConfigError, match="generation.prompt_pool"):
            check_run_overrides(overrides, where="run conf")


def test_the_trigger_form_passes_a_pool_through_the_same_rule(tmp_path, monkeypatch):
    pytest.importorskip("airflow.sdk")
    from airflow.sdk import ParamsDict

    from dpo_tasks.orchestration.params import overrides_from_params, persona_params

    monkeypatch.setenv("PERSONA_DPO_LOCAL_POOL_ROOT", str(tmp_path))
    values = ParamsDict(persona_params(load_persona(PERSONA).config)).dump()
    assert values["prompt_pool"] is None
    assert not any(s.startswith("generation.prompt_pool") for s in overrides_from_params(values))
    values["prompt_pool"] = str(tmp_path / "alice.jsonl")
    assert f'generation.prompt_pool="{tmp_path / "alice.jsonl"}"' in overrides_from_params(values)
    values["prompt_pool"] = "/etc/passwd"
    with pytest.raises(ConfigError, match="must be an absolute path under"):
        overrides_from_params(values)


def test_each_run_samples_its_own_prompts_and_a_rerun_the_same(persona, tmp_path):
    pool = load_prompt_pool(PERSONA)

    def sample(run_dir, p=persona):
        return [r["id"] for r in generate.select_prompts(p, RunDir(run_dir), [{**r, "source": "pool"} for r in pool])]

    monday = sample(tmp_path / "a" / "scheduled__2026-11-30T00:00:00+00:00")
    # The same Airflow run, seen from another worker's mount or retried: the same prompts.
    assert sample(tmp_path / "b" / "scheduled__2026-11-30T00:00:00+00:00") == monday
    assert sample(tmp_path / "scheduled__2026-12-07T00:00:00+00:00") != monday
    assert sample(tmp_path / "a" / "scheduled__2026-11-30T00:00:00+00:00", with_overrides(persona, {"generation": {"seed": 7}})) != monday
    assert generate.run_seed(persona, RunDir(tmp_path / "x")) != generate.run_seed(load_persona("persona_b_indian_veg"), RunDir(tmp_path / "x"))
