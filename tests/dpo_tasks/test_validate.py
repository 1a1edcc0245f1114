"""`validate` and `toy-data`: bad rows named with their line or index, good rows kept, synthetic data valid."""

import json

import pytest

from dpo_tasks.cli import main as cli
from dpo_tasks.config import load_persona
from dpo_tasks.judges.rules import violations
from dpo_tasks.validate import toy_records, validate_file, validate_records

GOOD = {"prompt": "Tacos tonight?", "chosen": "Black bean tacos with lime.", "rejected": "Beef tacos with cheese."}
CHATML = {
    "prompt": "<|im_start|>system\nYou cook.<|im_end|>\n<|im_start|>user\nTacos?<|im_end|>\n<|im_start|>assistant\n",
    "chosen": "Bean tacos.<|im_end|>\n",
    "rejected": "Beef tacos.<|im_end|>\n",
}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        pytest.param({**GOOD, "chosen": "  "}, "field 'chosen' is empty", id="empty-chosen"),
        pytest.param({**GOOD, "prompt": ""}, "field 'prompt' is empty", id="empty-prompt"),
        pytest.param({**CHATML, "chosen": "<|im_end|>\n"}, "field 'chosen' is empty", id="chatml-only-markers-is-empty"),
        pytest.param({**GOOD, "rejected": GOOD["chosen"] + "\n"}, "'chosen' and 'rejected' are identical", id="identical"),
        pytest.param({**CHATML, "rejected": "Bean tacos.\n<|im_end|>"}, "are identical", id="identical-after-chatml-markers"),
        pytest.param({"prompt": "p", "chosen": "c"}, "missing field 'rejected'", id="missing-field"),
        pytest.param({**GOOD, "chosen": 3}, "field 'chosen' must be a string, got int 3", id="wrong-type"),
        pytest.param({**GOOD, "rejected": None}, "field 'rejected' must be a string, got NoneType None", id="null"),
        pytest.param(["p", "c", "r"], "expected an object with prompt, chosen, rejected, got list", id="not-an-object"),
        pytest.param({**GOOD, "chosen": "x" * 101}, "field 'chosen' is 101 characters, over the limit of 100", id="too-long"),
    ],
)
def test_bad_records_are_named_and_skipped(record, message):
    result = validate_records([GOOD, record], max_chars=100)
    assert result.good == [GOOD]
    assert [str(p) for p in result.problems if message in str(p)] and all(p.where == "item 1" for p in result.problems)


@pytest.mark.parametrize("record", [pytest.param(GOOD, id="plain"), pytest.param(CHATML, id="chatml"),
                                    pytest.param({**GOOD, "id": 7, "source": "community"}, id="extra-keys-kept")])
def test_good_records_pass_unchanged(record):
    result = validate_records([record])
    assert result.good == [record] and result.problems == []


def test_duplicates_point_at_the_first_copy():
    other = {**GOOD, "prompt": "Another?"}
    result = validate_records([GOOD, other, dict(GOOD)])
    assert result.good == [GOOD, other]
    assert [str(p) for p in result.problems] == ["item 2: duplicate of item 0"]


def test_a_dataset_that_is_not_a_list_is_rejected_with_its_type():
    with pytest.raises(ValueError, match="must be a list .* got dict"):
        validate_records({"prompt": "p"})


def test_token_limit_uses_the_tokenizer():
    long = {**GOOD, "chosen": "tacos " * 50}
    result = validate_records([GOOD, long], max_tokens=40, count_tokens=lambda text: len(text.split()))
    assert result.good == [GOOD]
    assert [str(p) for p in result.problems] == ["item 1: prompt + chosen is 51 tokens, over the limit of 40"]


def write_jsonl_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_cli_lists_every_bad_line_and_exits_nonzero(tmp_path, capsys):
    path = write_jsonl_lines(tmp_path / "d.jsonl", [
        json.dumps(GOOD),
        "",
        '{"prompt": "torn',
        json.dumps({**GOOD, "rejected": GOOD["chosen"]}),
        json.dumps(GOOD),
        json.dumps(CHATML),
    ])
    assert cli(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{path}: line 3: not valid JSON: Unterminated string starting at",
        f"{path}: line 4: 'chosen' and 'rejected' are identical",
        f"{path}: line 5: duplicate of line 1",
        f"{path}: 5 records, 2 good, 3 bad",
    ]


def test_cli_accepts_a_json_list_and_prints_stats(tmp_path, capsys):
    path = tmp_path / "upload.json"
    path.write_text(json.dumps([GOOD, CHATML, {**GOOD, "prompt": "Burritos?"}], indent=2))
    assert cli(["validate", str(path), "--stats"]) == 0
    out = capsys.readouterr().out
    stats = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert stats["records"] == 3 and stats["good"] == 3 and stats["bad"] == 0 and stats["chatml"] == 1
    assert stats["distinct_prompts"] == 3 and stats["chosen_chars"]["max"] == len(GOOD["chosen"])
    assert out.rstrip().endswith("3 records, 3 good, 0 bad")


def test_cli_json_list_problems_name_the_index(tmp_path, capsys):
    path = tmp_path / "upload.json"
    path.write_text(json.dumps([GOOD, {"prompt": "p"}]))
    assert cli(["validate", str(path)]) == 1
    assert f"{path}: item 1: missing field 'chosen'" in capsys.readouterr().out


def test_cli_token_limit_with_the_real_tokenizer(tmp_path, capsys, smol_tokenizer_dir):
    path = write_jsonl_lines(tmp_path / "d.jsonl", [json.dumps(GOOD), json.dumps({**GOOD, "chosen": "tacos " * 100})])
    assert cli(["validate", str(path), "--max-tokens", "64", "--tokenizer", str(smol_tokenizer_dir)]) == 1
    out = capsys.readouterr().out
    assert "line 2: prompt + chosen is" in out and "over the limit of 64" in out and "line 1" not in out


def test_cli_missing_file(tmp_path, capsys):
    assert cli(["validate", str(tmp_path / "nope.jsonl")]) == 2
    assert "dataset file not found" in capsys.readouterr().err


def test_toy_data_is_valid_distinct_seeded_and_has_a_signal(tmp_path):
    out = tmp_path / "toy.jsonl"
    assert cli(["toy-data", "--out", str(out), "--size", "40", "--seed", "3"]) == 0
    result = validate_file(out)
    assert result.total == 40 and len(result.good) == 40 and result.problems == []
    assert len({r["prompt"] for r in result.good}) == 40
    again = tmp_path / "again.jsonl"
    cli(["toy-data", "--out", str(again), "--size", "40", "--seed", "3"])
    assert again.read_text() == out.read_text()
    persona = load_persona("persona_e_mexican_vegan")
    assert all(violations(persona, r["rejected"]) and not violations(persona, r["chosen"]) for r in result.good)


@pytest.mark.parametrize("persona_id", ["persona_a_korean_spicy", "persona_f_chinese_keto"])
def test_toy_data_more_records_than_ingredient_combinations_stay_distinct(persona_id):
    records = toy_records(load_persona(persona_id), 3000, seed=0)
    assert len({r["prompt"] for r in records}) == 3000
    assert validate_records(records).problems == []


def test_toy_data_size_must_be_positive(tmp_path, capsys):
    assert cli(["toy-data", "--out", str(tmp_path / "t.jsonl"), "--size", "0"]) == 2
    assert "size=0 must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "no records", id="empty-file"),
        pytest.param(json.dumps({"data": [GOOD]}, indent=2), "one JSON object with keys ['data'] spread over several lines", id="wrapped-object"),
    ],
)
def test_cli_unusable_files_fail(tmp_path, capsys, text, message):
    path = tmp_path / "d.json"
    path.write_text(text)
    assert cli(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert message in captured.out + captured.err
