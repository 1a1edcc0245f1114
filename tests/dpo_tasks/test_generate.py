from __future__ import annotations

import json
import logging

import pytest

from dpo_tasks import generate
from dpo_tasks.config import load_persona, with_overrides
from dpo_tasks.prompts import system_prompt
from dpo_tasks.runs import RunDir, read_json, read_jsonl, write_jsonl

PERSONA = "persona_e_mexican_vegan"
POOL = [{"id": f"p{i:02d}", "prompt": f"Recipe {i}: something with {'beans ' * (i % 5)}and corn?"} for i in range(12)]


@pytest.fixture
def persona(tiny_model_dir):
    return with_overrides(
        load_persona(PERSONA),
        {"model": {"base": str(tiny_model_dir)}, "generation": {"num_prompts": 6, "batch_size": 4, "max_new_tokens": 8}},
    )


@pytest.fixture
def pool(tmp_path):
    return write_jsonl(tmp_path / "pool.jsonl", POOL)


def test_two_variants_per_prompt_with_strong_and_weak_system_prompts(persona, pool, tmp_path):
    rd = RunDir(tmp_path / "run")
    summary = generate.run(persona, rd, pool_path=pool)

    prompts = read_jsonl(rd.prompts)
    variants = read_jsonl(rd.variants)
    assert len(prompts) == 6 and len({p["id"] for p in prompts}) == 6
    assert [v["id"] for v in variants] == [p["id"] for p in prompts]
    for v in variants:
        assert v["system_strong"] == system_prompt(persona, "strong")
        assert v["system_weak"] == system_prompt(persona, "weak")
        assert isinstance(v["variant_a"], str) and isinstance(v["variant_b"], str)
    assert any(v["variant_a"] != v["variant_b"] for v in variants)
    assert summary["variants_written"] == 6 and summary["resumed"] == 0
    # A random tiny model does not end its turn within 8 tokens: the records say so.
    assert all(isinstance(v["variant_a_cut_off"], bool) and isinstance(v["variant_b_cut_off"], bool) for v in variants)
    assert summary["cut_off"] == {f: sum(v[f"{f}_cut_off"] for v in variants) for f in ("variant_a", "variant_b")}
    assert summary["cut_off"]["variant_a"] > 0
    assert summary["new_tokens"] > 0 and summary["tokens_per_s"] > 0
    assert read_json(rd.stage_summary("generate")) == summary


def test_same_run_and_seed_same_file_other_run_or_seed_other_file(persona, pool, tmp_path):
    """The sampling seed is generation.seed with the run's name: a rerun of a run replays it, the next run does not."""
    runs = {}
    for name, run, seed in [("a", "run1", 42), ("b", "run1", 42), ("c", "run1", 7), ("d", "run2", 42)]:
        rd = RunDir(tmp_path / name / run)
        summary = generate.run(with_overrides(persona, {"generation": {"seed": seed}}), rd, pool_path=pool)
        runs[name] = rd.variants.read_text()
        assert summary["seed"] == generate.run_seed(with_overrides(persona, {"generation": {"seed": seed}}), rd)
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"] and runs["a"] != runs["d"]


@pytest.mark.parametrize(
    "keep_lines, torn",
    [
        pytest.param(3, True, id="mid-batch-with-torn-line"),
        pytest.param(4, False, id="batch-boundary"),
        pytest.param(0, True, id="only-a-torn-line"),
    ],
)
def test_resume_after_kill_gives_the_uninterrupted_file(persona, pool, tmp_path, keep_lines, torn):
    full = RunDir(tmp_path / "full" / "run")  # same run name: same seed
    generate.run(persona, full, pool_path=pool)
    expected = full.variants.read_text()

    killed = RunDir(tmp_path / "killed" / "run")
    generate.run(persona, killed, pool_path=pool)
    lines = killed.variants.read_text().splitlines(keepends=True)
    partial = "".join(lines[:keep_lines]) + (lines[keep_lines][:25] if torn else "")
    killed.variants.write_text(partial)

    summary = generate.run(persona, killed, pool_path=pool)
    assert killed.variants.read_text() == expected
    assert summary["resumed"] == keep_lines
    assert summary["variants_written"] == 6 - keep_lines


def test_feedback_prompts_come_first(persona, pool, tmp_path):
    rd = RunDir(tmp_path / "run")
    feedback = [
        {"id": "fb-1", "prompt": "A vegan pozole for six, please.", "source": "feedback"},
        {"id": "fb-2", "prompt": POOL[0]["prompt"]},  # also in the pool: kept once, as feedback
    ]
    write_jsonl(rd.ensure().feedback_prompts, feedback)
    summary = generate.run(persona, rd, pool_path=pool)

    prompts = read_jsonl(rd.prompts)
    assert [p["id"] for p in prompts[:2]] == ["fb-1", "fb-2"]
    assert [p["source"] for p in prompts] == ["feedback"] * 2 + ["pool"] * 4
    assert [p["prompt"] for p in prompts].count(POOL[0]["prompt"]) == 1
    assert [v["source"] for v in read_jsonl(rd.variants)][:2] == ["feedback", "feedback"]
    assert summary["feedback_prompts"] == 2


def test_bad_pool_rows_are_reported_and_skipped(persona, tmp_path, caplog):
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"id": "ok1", "prompt": "Tacos?"}, {"id": "bad", "prompt": "  "}, {"prompt": "no id"}, {"id": "ok2", "prompt": "Mole?"}])
    rd = RunDir(tmp_path / "run")
    with caplog.at_level(logging.WARNING):
        generate.run(persona, rd, pool_path=pool)
    assert sorted(p["id"] for p in read_jsonl(rd.prompts)) == ["ok1", "ok2"]
    assert f"{pool}:2:" in caplog.text and f"{pool}:3:" in caplog.text
    assert "only 2 prompts available" in caplog.text


def test_batched_left_padded_generation_matches_one_at_a_time(tiny_model_dir):
    from dpo_tasks.models import load_policy

    model, tokenizer = load_policy(str(tiny_model_dir))
    conversations = [[{"role": "user", "content": "hi " * n + "what now?"}] for n in (1, 9, 3, 17)]
    kwargs = dict(temperature=0.0, top_p=1.0, max_new_tokens=6, seed=0)
    batched = generate.generate_texts(model, tokenizer, conversations, batch_size=4, **kwargs)
    single = [generate.generate_texts(model, tokenizer, [c], batch_size=1, **kwargs)[0] for c in conversations]
    assert batched == single, "padding leaked into the shorter prompts' outputs"
    assert tokenizer.padding_side == "right", "the caller's padding side must be restored"


def test_cli_generate(persona, pool, tmp_path, tiny_model_dir, capsys):
    from dpo_tasks.cli import main

    rc = main([
        "generate", "--persona", PERSONA, "--run-dir", str(tmp_path / "run"), "--pool", str(pool),
        "--set", f"model.base={json.dumps(str(tiny_model_dir))}", "--set", "generation.num_prompts=3", "--set", "generation.max_new_tokens=8",
    ])
    assert rc == 0
    assert "3 prompts (0 from feedback), 3 written" in capsys.readouterr().out
    assert len(read_jsonl(tmp_path / "run" / "variants.jsonl")) == 3


def test_cut_off_means_no_stop_token_within_the_limit():
    import torch

    stop = {0, 2}
    rows = torch.tensor([[5, 6, 7, 8], [5, 2, 0, 0], [5, 6, 7, 2], [0, 0, 0, 0]])
    assert generate._new_token_counts(rows, stop) == [(4, False), (2, True), (4, True), (1, True)]


def test_generate_reports_cut_off_per_answer(tiny_model_dir):
    from dpo_tasks.models import load_policy

    model, tokenizer = load_policy(str(tiny_model_dir))
    conversations = [[{"role": "user", "content": f"tacos {n}?"}] for n in range(3)]
    stats: dict = {}
    outs = generate.generate(model, tokenizer, conversations, temperature=0.0, top_p=1.0, max_new_tokens=4, batch_size=3, seed=0, stats=stats)
    assert [o.cut_off for o in outs] == [True, True, True] and stats["cut_off"] == 3
    assert [o.text for o in outs] == generate.generate_texts(model, tokenizer, conversations, temperature=0.0, top_p=1.0,
                                                              max_new_tokens=4, batch_size=3, seed=0)
