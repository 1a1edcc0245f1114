"""Stage `format`: ChatML via the real SmolLM2 chat template, one end-of-turn token, bad rows skipped."""

import pytest

from dpo_tasks import format as fmt
from dpo_tasks.cli import main as cli
from dpo_tasks.config import load_persona, with_overrides
from dpo_tasks.prompts import system_prompt
from dpo_tasks.runs import RunDir, read_json, read_jsonl, write_jsonl
from dpo_tasks.validate import validate_file

VEGAN = load_persona("persona_e_mexican_vegan")
SERVING = system_prompt(VEGAN, "serving")


@pytest.fixture
def persona(smol_tokenizer_dir):
    return with_overrides(VEGAN, {"model": {"base": str(smol_tokenizer_dir)}, "training": {"max_length": 64, "max_prompt_length": 32}})


def labeled_run(tmp_path, rows):
    run_dir = RunDir(tmp_path / "run").ensure()
    write_jsonl(run_dir.labeled, rows)
    return run_dir


def pair(i, chosen="Bean tacos with lime.", rejected="Beef tacos.", **extra):
    return {"id": f"p{i}", "prompt": f"Tacos number {i}?", "chosen": chosen, "rejected": rejected, "source": "generated", **extra}


def test_records_match_the_smollm2_chat_template(tmp_path, persona):
    run_dir = labeled_run(tmp_path, [pair(1)])
    summary = fmt.run(persona, run_dir)
    [record] = read_jsonl(run_dir.dpo)
    assert record == {
        "prompt": f"<|im_start|>system\n{SERVING}<|im_end|>\n<|im_start|>user\nTacos number 1?<|im_end|>\n<|im_start|>assistant\n",
        "chosen": "Bean tacos with lime.<|im_end|>",
        "rejected": "Beef tacos.<|im_end|>",
    }
    assert summary["records"] == 1 and summary["end_of_turn"] == "<|im_end|>"
    assert validate_file(run_dir.dpo).problems == []
    assert read_json(run_dir.stage_summary("format")) == summary


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Tacos.", "Tacos.<|im_end|>", id="plain"),
        pytest.param("Tacos.<|im_end|>", "Tacos.<|im_end|>", id="already-ended"),
        pytest.param("Tacos.\n<|im_end|>\n", "Tacos.<|im_end|>", id="ended-with-newlines"),
        pytest.param("Tacos.<|im_end|><|im_end|>", "Tacos.<|im_end|>", id="doubled"),
        pytest.param("Tacos.<|im_end|>\n<|im_start|>user\nmore?", "Tacos.<|im_end|>", id="runs-on-into-another-turn"),
        pytest.param("  Tacos.  \n", "Tacos.<|im_end|>", id="whitespace"),
    ],
)
def test_exactly_one_end_of_turn_token(tmp_path, persona, smol_tokenizer_dir, text, expected):
    from transformers import AutoTokenizer

    run_dir = labeled_run(tmp_path, [pair(1, chosen=text)])
    fmt.run(persona, run_dir)
    [record] = read_jsonl(run_dir.dpo)
    assert record["chosen"] == expected
    tokenizer = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    ids = tokenizer(record["prompt"] + record["chosen"], add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_end|>")) == 3  # system, user, assistant
    assert ids[-1] == tokenizer.eos_token_id  # so TRL appends no second EOS


def test_bad_rows_are_skipped_and_sources_counted(tmp_path, persona, caplog):
    rows = [
        pair(1),
        pair(2, chosen=""),
        {"id": "p3", "prompt": "Tacos?", "chosen": "Bean tacos."},
        pair(4, chosen="<|im_end|>"),
        pair(5, rejected="Bean tacos with lime.<|im_end|>"),
        pair(6, source="feedback"),
    ]
    run_dir = labeled_run(tmp_path, rows)
    summary = fmt.run(persona, run_dir)
    assert summary["records"] == 2 and summary["skipped"] == 4
    assert summary["by_source"] == {"generated": 1, "feedback": 1}
    for n, pid in ((2, "p2"), (3, "p3"), (4, "p4"), (5, "p5")):
        assert f"labeled.jsonl record {n} (id {pid!r})" in caplog.text


def test_length_over_training_max_is_reported(tmp_path, persona, caplog):
    run_dir = labeled_run(tmp_path, [pair(1), pair(2, chosen="tacos " * 100)])
    summary = fmt.run(persona, run_dir)
    assert summary["over_max_length"] >= 1 and summary["longest_tokens"] > 64
    assert "exceed training.max_length=64" in caplog.text


def test_cli_runs_format_and_reports_missing_input(tmp_path, smol_tokenizer_dir, capsys):
    run_dir = labeled_run(tmp_path, [pair(1), pair(2)])
    base = ["--persona", VEGAN.id, "--set", f"model.base={smol_tokenizer_dir}"]
    assert cli(["format", *base, "--run-dir", str(run_dir.root)]) == 0
    assert len(read_jsonl(run_dir.dpo)) == 2
    assert cli(["format", *base, "--run-dir", str(tmp_path / "nothing")]) == 2
    assert "labeled.jsonl not found: run the label stage first" in capsys.readouterr().err


def test_a_cut_off_chosen_answer_is_never_closed_as_a_finished_turn(tmp_path, persona, caplog):
    rows = [pair(1), pair(2, rejected="Beef tacos with a long", rejected_cut_off=True),
            pair(3, chosen="Bean tacos with a long", chosen_cut_off=True)]
    run_dir = labeled_run(tmp_path, rows)
    caplog.set_level("INFO", logger="dpo_tasks.format")
    summary = fmt.run(persona, run_dir)
    records = read_jsonl(run_dir.dpo)
    assert (summary["records"], summary["cut_off"], summary["rejected_cut_off"]) == (2, 1, 1)
    assert not any("Bean tacos with a long" in r["chosen"] for r in records)
    # A cut-off rejected answer stays a rejected turn: DPO pushes its premature end down, not up.
    assert [r["rejected"] for r in records if "a long" in r["rejected"]] == ["Beef tacos with a long<|im_end|>"]
    assert "chosen answer was cut off" in caplog.text
