"""Bad input files, table-driven: personas.yaml, the shared loaders, run files and feedback ingest.

Every case asserts the exact outcome, either a clear error that names the problem and
the place (file, line, persona) or a correct acceptance, and that nothing already
stored changed: the input file's bytes, the run directory, the feedback rows.
A traceback (any exception other than the documented error) fails the case.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest

from dpo_tasks.config import ConfigError, load_personas, load_personas_lenient

GOOD = "persona_good"
OTHER = "persona_other"


def personas_text(*, good: str = "", other: str = "", defaults: str = "", top: str = "") -> str:
    """A small valid personas.yaml; the keyword snippets are inserted as extra lines (already indented)."""
    return f"""\
defaults:
  schedule: "@weekly"
{defaults}personas:
  - id: {GOOD}
    name: Good
    cuisines: [korean]
    preferred_ingredients: [kimchi]
{good}  - id: {OTHER}
    name: Other
    cuisines: [thai]
    preferred_ingredients: [basil]
{other}{top}"""


BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
)

# (text, who is refused: "file" | a persona id | None for acceptance, fragments the error must hold)
PERSONAS_CASES = [
    pytest.param(personas_text(), None, [], id="valid"),
    pytest.param(BOMB + personas_text(), "file", ["personas.yaml:5:", "expands to more than"], id="alias-bomb"),
    pytest.param(personas_text(defaults="  x: *nope\n"), "file", ["personas.yaml:3:", "undefined alias"], id="alias-undefined"),
    pytest.param(personas_text(defaults="  x: &a [*a]\n"), "file", ["unknown field 'x'", "[[[[...]]]]"], id="alias-recursive"),
    pytest.param(personas_text(good="    overrides: &o {gate: {min_win_rate_lower_bound: 0.6}}\n",
                               other="    overrides: *o\n"), None, [], id="small-alias-accepted"),
    pytest.param("personas: " + "[" * 5000 + "]" * 5000 + "\n", "file", [":1:", "nested deeper than 32"], id="deep-nesting"),
    pytest.param(personas_text(good="    name: Again\n"), "file", ["personas.yaml:8:", "duplicate key 'name' (first at line 5)"], id="duplicate-key"),
    pytest.param(personas_text(defaults="  schedule: '@daily'\n"), "file", [":3:", "duplicate key 'schedule'"], id="duplicate-default-key"),
    pytest.param(personas_text(other=f"  - id: {GOOD}\n    name: Third\n    cuisines: [x]\n    preferred_ingredients: [y]\n"),
                 GOOD, ["defined more than once", "#0, #2"], id="duplicate-id"),
    pytest.param(personas_text(other=f"  - id: {GOOD}\n    name: 3\n    cuisines: [x]\n    preferred_ingredients: [y]\n"
                                     f"  - id: {GOOD}\n    name: 4\n    cuisines: [x]\n    preferred_ingredients: [y]\n"),
                 GOOD, ["defined more than once", "#0, #2, #3"], id="id-three-times"),
    pytest.param(personas_text(top="extra: 1\n"), "file", ["unknown top-level key(s) ['extra']"], id="unknown-top-level"),
    pytest.param(personas_text(good="    config: {gate: {min_win_rate_lower_bound: 0.9}}\n"), GOOD,
                 ["persona 'persona_good'", "unknown field 'config'", "go under 'overrides'"], id="config-instead-of-overrides"),
    pytest.param(personas_text(good="    overides: {}\n"), GOOD, ["unknown field 'overides'"], id="typo-overrides"),
    pytest.param(personas_text(good="    overrides: {training: {epochz: 2}}\n"), GOOD,
                 ["unknown field 'overrides.training.epochz'"], id="unknown-nested-key"),
    pytest.param(personas_text(good="    overrides: {schedule: '61 * * * *'}\n"), GOOD,
                 ["persona 'persona_good'", "overrides.schedule", "out of range"], id="cron-out-of-range"),
    pytest.param(personas_text(good="    overrides: {schedule: 'every monday'}\n"), GOOD,
                 ["persona 'persona_good'", "not a 5-field cron expression"], id="cron-words"),
    pytest.param(personas_text(good="    overrides: {schedule: '0 0 30 2 *'}\n"), GOOD, ["never fires"], id="cron-never-fires"),
    pytest.param(personas_text(good="    overrides: {schedule: '* * * * * * *'}\n"), GOOD, ["5-field"], id="cron-seven-fields"),
    pytest.param(personas_text(good="    overrides: {schedule: \"0 3 * * 1\\n\"}\n"), GOOD, ["5-field"], id="cron-trailing-newline"),
    pytest.param(personas_text(good="    overrides: {schedule: '0 3 * * 1'}\n"), None, [], id="cron-valid"),
    pytest.param(personas_text(good="    overrides: {schedule: '@once'}\n"), None, [], id="cron-once"),
    pytest.param(personas_text(good="    overrides: {schedule: null}\n"), None, [], id="schedule-none"),
    pytest.param(personas_text(good="    overrides: {kubernetes: {train: {memory: lots}}}\n"), GOOD,
                 ["overrides.kubernetes.train.memory", "'lots' is not a Kubernetes quantity"], id="memory-lots"),
    pytest.param(personas_text(good="    overrides: {kubernetes: {train: {memory: '64'}}}\n"), GOOD,
                 ["add a suffix"], id="memory-no-suffix"),
    pytest.param(personas_text(good="    overrides: {kubernetes: {generate: {cpu: '-1'}}}\n"), GOOD,
                 ["not a Kubernetes quantity"], id="cpu-negative"),
    pytest.param(personas_text(good="    overrides: {kubernetes: {evaluate: {cpu: '0'}}}\n"), GOOD,
                 ["positive"], id="cpu-zero"),
    pytest.param(personas_text(good="    overrides: {kubernetes: {train: {ephemeral_storage: 10 Gi}}}\n"), GOOD,
                 ["ephemeral_storage", "not a Kubernetes quantity"], id="ephemeral-space"),
    pytest.param(personas_text(good="    overrides: {kubernetes: {train: {cpu: 500m, memory: 1.5Gi, ephemeral_storage: 100G}, shm_size: 8Gi}}\n"),
                 None, [], id="quantities-valid"),
    pytest.param(personas_text().replace(f"id: {GOOD}", f'id: "{GOOD}\\n"'), "#0", ["'persona_good\\n' must match"], id="id-trailing-newline"),
    pytest.param(personas_text().replace(f"id: {GOOD}", "id: " + "x" * 5000), "#0", ["must match", "..."], id="id-huge"),
    pytest.param(personas_text(good="    description: " + "d" * 200_000 + "\n"), None, [], id="long-description-accepted"),
    pytest.param(personas_text(good="    style_keywords: " + "x" * 100_000 + "\n"), GOOD,
                 ["style_keywords", "..."], id="bad-value-bounded-in-message"),
    pytest.param("personas: [\n", "file", [":2:", "not valid YAML"], id="broken-yaml"),
    pytest.param("- a\n- b\n", "file", ["expected a mapping with a 'personas' list"], id="top-level-list"),
    pytest.param(personas_text(defaults="  training: 3\n"), "file", ["defaults: field 'training'"], id="defaults-wrong-type"),
    pytest.param("personas: !!python/object/apply:os.system ['true']\n", "file", ["not valid YAML"], id="python-tag"),
]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("text", "refused", "fragments"), PERSONAS_CASES)
def test_personas_yaml(tmp_path, text, refused, fragments):
    path = tmp_path / "personas.yaml"
    path.write_text(text, encoding="utf-8")
    before = _digest(path)
    start = time.monotonic()
    if refused == "file":
        with pytest.raises(ConfigError) as exc:
            load_personas_lenient(path)
        message = str(exc.value)
    else:
        result = load_personas_lenient(path)
        if refused is None:
            assert result.errors == {}
            assert set(result.personas) == {GOOD, OTHER}
            message = ""
        else:
            assert set(result.errors) == {refused}
            # A bad persona never takes the others down.
            assert set(result.personas) == {GOOD, OTHER} - {GOOD if refused.startswith("#") else refused}
            message = result.errors[refused]
            with pytest.raises(ConfigError):
                load_personas(path)
    for fragment in fragments:
        assert fragment in message
    assert len(message) < 2000, "error text is bounded"
    assert time.monotonic() - start < 5, "fails fast"
    assert _digest(path) == before


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        pytest.param(lambda p: p.mkdir(), ["is a directory"], id="directory"),
        pytest.param(lambda p: p.write_bytes(b"personas: [\xff]\n"), [":1:", "not UTF-8", "0xff"], id="not-utf8"),
        pytest.param(lambda p: p.write_bytes(b"#" * (1024 * 1024 + 1)), ["over the limit"], id="too-big"),
        pytest.param(lambda p: None, ["not found"], id="missing"),
    ],
)
def test_personas_file_itself(tmp_path, make, fragments):
    path = tmp_path / "personas.yaml"
    make(path)
    with pytest.raises(ConfigError) as exc:
        load_personas_lenient(path)
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_personas_bom_is_accepted(tmp_path):
    path = tmp_path / "personas.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + personas_text().encode())
    assert set(load_personas(path).personas) == {GOOD, OTHER}


# --- DPO datasets (validate / dpo_custom's dataset_uri) --------------------------------------

from dpo_tasks import cli  # noqa: E402
from dpo_tasks.loaders import InputFileError  # noqa: E402
from dpo_tasks.validate import validate_file  # noqa: E402


def rec(prompt: str = "Make dinner", chosen: str = "Tofu tacos.", rejected: str = "Beef tacos.") -> bytes:
    import json

    return json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}, ensure_ascii=False).encode()


def rec2() -> bytes:
    return rec("Make lunch", "Bean bowl.", "Pork bowl.")


DEEP = b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b', "chosen": "a", "rejected": "b"}'

# (file bytes, good records, problems as "line N: fragment")
DATASET_CASES = [
    pytest.param(rec() + b"\n" + rec2() + b"\n", 2, [], id="valid"),
    pytest.param(b"\xef\xbb\xbf" + rec() + b"\n" + rec2() + b"\n", 2, [], id="bom"),
    pytest.param(rec(chosen="Tofu\u2028tacos.") + b"\n" + rec2() + b"\n", 2, [], id="u2028-in-string"),
    pytest.param(rec(chosen="Tofu\u0085tacos.") + b"\n" + rec2() + b"\n", 2, [], id="u0085-in-string"),
    pytest.param(rec(chosen="Tofu\u2029\x0c\x1ctacos.") + b"\n" + rec2() + b"\n", 2, [], id="other-unicode-breaks"),
    pytest.param(rec() + b"\r\n" + rec2() + b"\r\n", 2, [], id="crlf"),
    pytest.param(rec() + b"\n\n\n" + rec2(), 2, [], id="blank-lines-no-final-newline"),
    pytest.param(rec() + b"\n" + rec2().replace(b"Bean", b"B\xffan") + b"\n", 1, ["line 2: not UTF-8: byte 0xff"], id="not-utf8-line"),
    pytest.param(rec().replace(b"Tofu", b"\\ud800") + b"\n" + rec2() + b"\n", 1, ["line 1: ", "lone UTF-16 surrogate"], id="lone-surrogate"),
    pytest.param(rec().replace(b"Tofu", b"\\ud83d\\ude00") + b"\n", 1, [], id="surrogate-pair-accepted"),
    pytest.param(rec() + b"\n" + DEEP + b"\n", 1, ["line 2: ", "nested deeper"], id="deep-json"),
    pytest.param(rec() + b"\n" + b'{"prompt": ' + b"7" * 5000 + b"}\n", 1, ["line 2: ", "4300 digits"], id="huge-number"),
    pytest.param(rec() + b"\n" + b'{"prompt": NaN}\n', 1, ["line 2: ", "NaN is not a number"], id="nan"),
    pytest.param(rec(chosen="Tofu tacos.<|im_end|>\n<|im_start|>user\nthanks") + b"\n", 0,
                 ["line 1: field 'chosen' contains the chat control token '<|im_end|>'"], id="chatml-turn-in-chosen"),
    pytest.param(rec(rejected="<|im_start|>assistant\nBeef") + b"\n", 0, ["line 1: field 'rejected'", "<|im_start|>"], id="chatml-start-in-rejected"),
    pytest.param(rec(chosen="Tofu <|endoftext|> more") + b"\n", 0, ["<|endoftext|>"], id="endoftext-inside"),
    pytest.param(rec(chosen="Tofu tacos.<|im_end|>") + b"\n", 1, [], id="chatml-single-trailing-eot"),
    pytest.param(rec(prompt="<|im_start|>user\nMake dinner<|im_end|>\n<|im_start|>assistant\n", chosen="Tofu.<|im_end|>",
                     rejected="Beef.<|im_end|>") + b"\n", 1, [], id="chatml-formatted-record"),
    pytest.param(b'["a", "b"]\n' + rec() + b"\n", 0, ["line 2: not valid JSON: Extra data"], id="list-line-makes-json-list"),
    pytest.param(rec() + b'\n["a", "b"]\n', 1, ["line 2: expected an object"], id="array-line"),
    pytest.param(b"", 0, [], id="empty"),
    pytest.param(b"[" + rec() + b"," + rec2() + b"]", 2, [], id="json-list"),
    pytest.param(b"[" + rec() + b",\n" + rec2() + b"\n", 0, ["line 3: not valid JSON"], id="json-list-truncated"),
    pytest.param(b'{\n  "prompt": "a",\n  "chosen": "b",\n  "rejected": "c"\n}\n', 0, ["line 1: one JSON object"], id="pretty-object"),
    pytest.param(rec(chosen="x" * 20_001) + b"\n", 0, ["over the limit of 20000"], id="field-too-long"),
    pytest.param(b'{"prompt": 3, "chosen": "a", "rejected": "b"}\n', 0, ["line 1: field 'prompt' must be a string"], id="prompt-number"),
    pytest.param(rec() + b"\n" + rec()[:-5], 1, ["line 2: not valid JSON"], id="truncated-last-line"),
    pytest.param(rec() + b"\n" + rec() + b"\n", 1, ["line 2: duplicate of line 1"], id="duplicate"),
]


@pytest.mark.parametrize(("data", "good", "problems"), DATASET_CASES)
def test_dpo_dataset(tmp_path, data, good, problems):
    path = tmp_path / "d.jsonl"
    path.write_bytes(data)
    result = validate_file(path)
    assert len(result.good) == good
    text = [str(p) for p in result.problems]
    assert len(text) == (len(problems) and max(1, len(text))), text
    for fragment in problems:
        assert any(fragment in t for t in text), (fragment, text)
    if "u2028" in str(data) or b"\xe2\x80\xa8" in data:
        assert "Tofu\u2028tacos." in [r["chosen"] for r in result.good]
    assert path.read_bytes() == data


def test_dpo_dataset_json_list_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b"[\n" + rec() + b",\n" + rec2().replace(b"Bean", b"\xc3(") + b"\n]")
    with pytest.raises(InputFileError, match=r"d\.json:3: not UTF-8 text: byte 0xc3"):
        validate_file(path)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        pytest.param(["validate", "{tmp}"], "is a directory, expected a dataset file", id="cli-validate-directory"),
        pytest.param(["validate", "{tmp}/missing.jsonl"], "dataset file not found", id="cli-validate-missing"),
        pytest.param(["validate", "/dev/zero"], "not a regular file", id="cli-validate-device"),
        pytest.param(["gate", "--run-dir", "{tmp}", "--set", "gate=1", "--set", "gate.min_win_rate_lower_bound=0.4"],
                     "conflicts with an earlier --set of 'gate'", id="cli-set-conflict"),
        pytest.param(["gate", "--run-dir", "{tmp}", "--set", "gate.min_win_rate_lower_bound=&a [*a]"],
                     "min_win_rate_lower_bound", id="cli-set-recursive-alias"),
        pytest.param(["gate", "--run-dir", "{tmp}", "--personas-file", "{tmp}"], "is a directory, expected a personas file",
                     id="cli-personas-directory"),
    ],
)
def test_cli_exits_2_with_a_clear_error(tmp_path, capsys, argv, fragment):
    rc = cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert fragment in err and "Traceback" not in err


# --- run files: summaries, gate.json, manifests, LATEST ---------------------------------------

from dpo_tasks.config import load_persona  # noqa: E402
from dpo_tasks.gate import read_gate, run as gate_run  # noqa: E402
from dpo_tasks.runs import RunDir, read_json, read_jsonl  # noqa: E402
from dpo_tasks.store.local import LocalStore  # noqa: E402
from dpo_tasks.store.manifest import ManifestError, read_manifest  # noqa: E402


def _gate_cli(tmp_path, capsys):
    rc = cli.main(["gate", "--persona", "persona_e_mexican_vegan", "--run-dir", str(tmp_path)])
    return rc, capsys.readouterr().err


SUMMARY_CASES = [
    pytest.param(b"{not json", ["summary_stats.json:1: not valid JSON"], id="summary-not-json"),
    pytest.param(b"\xff\xfe{}", ["summary_stats.json:1: not UTF-8"], id="summary-utf16"),
    pytest.param(b"[]", ["must be a JSON object"], id="summary-list"),
    pytest.param(b'{"n": "abc", "win_rate": 0.5, "ci_low": 0.4, "ci_high": 0.6}', ["'n' = 'abc' is not a finite number"], id="summary-n-string"),
    pytest.param(b'{"n": 10, "win_rate": 0.5, "ci_low": 7, "ci_high": 0.6}', ["'ci_low' = 7 is outside [0, 1]"], id="summary-ci-out-of-range"),
    pytest.param(b'{"n": 10, "win_rate": 0.5, "ci_low": Infinity, "ci_high": 0.6}', ["Infinity is not a number"], id="summary-infinity"),
    pytest.param(b'{"n": 10, "win_rate": true, "ci_low": 0.4, "ci_high": 0.6}', ["'win_rate' = True"], id="summary-bool"),
    pytest.param(b'{"n": 1.5, "win_rate": 0.5, "ci_low": 0.4, "ci_high": 0.6}', ["'n' = 1.5 is not a count"], id="summary-fractional-n"),
    pytest.param(b'{"n": ' + b"9" * 5000 + b"}", ["4300 digits"], id="summary-huge-number"),
]


@pytest.mark.parametrize(("data", "fragments"), SUMMARY_CASES)
def test_gate_refuses_a_damaged_evaluation_summary(tmp_path, capsys, data, fragments):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "summary_stats.json").write_bytes(data)
    rc, err = _gate_cli(tmp_path, capsys)
    assert rc == 2 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / "gate.json").exists()


def test_gate_summary_as_directory(tmp_path, capsys):
    (tmp_path / "eval" / "summary_stats.json").mkdir(parents=True)
    rc, err = _gate_cli(tmp_path, capsys)
    assert rc == 2 and "summary_stats.json: is a directory" in err


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param(b"{corrupt", "gate.json:1: not valid JSON", id="gate-json-corrupt"),
        pytest.param(b"[]", "not a gate decision", id="gate-json-list"),
        pytest.param(b'{"decision": "PROMOTE!"}', "not a gate decision", id="gate-json-bad-decision"),
        pytest.param(b'{"decision": "promote"}\x00\xff', "not UTF-8", id="gate-json-binary-tail"),
    ],
)
def test_publish_refuses_a_damaged_gate_json(tmp_path, capsys, data, fragment):
    (tmp_path / "gate.json").write_bytes(data)
    with pytest.raises(InputFileError, match=re.escape(fragment)):
        read_gate(tmp_path / "gate.json")
    store = tmp_path / "store"
    rc = cli.main(["publish", "--persona", "persona_e_mexican_vegan", "--run-dir", str(tmp_path), "--store", str(store)])
    err = capsys.readouterr().err
    assert rc == 2 and fragment in err and "Traceback" not in err
    assert not store.exists() or not any(store.rglob("LATEST"))
    assert (tmp_path / "gate.json").read_bytes() == data


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param(b'{"a": 1}\n[1]\n', "r.jsonl:2: expected a JSON object", id="jsonl-array-row"),
        pytest.param(b'{"a": 1}\n{bad\n{"a": 2}\n', "r.jsonl:2: not valid JSON", id="jsonl-bad-middle-line"),
        pytest.param(b'{"a": "\xff"}\n{"a": 1}\n', "r.jsonl:1: not UTF-8", id="jsonl-not-utf8"),
        pytest.param(b'{"a": "\\udfff"}\n', "r.jsonl:1: not usable JSON: a string holds a lone", id="jsonl-surrogate"),
    ],
)
def test_run_jsonl_errors_name_file_and_line(tmp_path, data, fragment):
    path = tmp_path / "r.jsonl"
    path.write_bytes(data)
    with pytest.raises(InputFileError, match=re.escape(fragment)):
        read_jsonl(path, tolerate_torn_tail=True)
    assert path.read_bytes() == data


def test_run_jsonl_keeps_rows_with_unicode_line_breaks(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": "x\u2028y"}\n{"a": "x\u0085y\u2029z"}\n', encoding="utf-8")
    assert read_jsonl(path) == [{"a": "x\u2028y"}, {"a": "x\u0085y\u2029z"}]


def test_run_jsonl_torn_tail_is_dropped_only_when_tolerated(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes('{"a": 1}\n{"a": "é'.encode()[:-1])
    assert read_jsonl(path, tolerate_torn_tail=True) == [{"a": 1}]
    assert path.read_bytes() == b'{"a": 1}\n'


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        pytest.param(lambda p: p.mkdir(), "is a directory", id="run-json-directory"),
        pytest.param(lambda p: p.write_bytes(b"[" * 100_000), "nested deeper", id="run-json-deep"),
        pytest.param(lambda p: p.write_bytes(b'{"x": 1,}'), "run.json:1: not valid JSON", id="run-json-trailing-comma"),
    ],
)
def test_run_json_errors(tmp_path, make, fragment):
    path = tmp_path / "run.json"
    make(path)
    with pytest.raises(InputFileError, match=re.escape(fragment)):
        read_json(path)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param(b"{", "MANIFEST.json:1: not valid JSON", id="manifest-truncated"),
        pytest.param(b'{"files": [1]}', "files[0] must be an object", id="manifest-entry-not-object"),
        pytest.param(b'{"files": [{"path": null}]}', "path None is not a safe relative path", id="manifest-path-null"),
        pytest.param(b'{"files": {}}', "has no 'files' list", id="manifest-files-mapping"),
        pytest.param(b"\xef\xbb\xbf{\"files\": [\"" + b"\xff" + b"\"]}", "not UTF-8", id="manifest-not-utf8"),
    ],
)
def test_manifest_errors(tmp_path, data, fragment):
    (tmp_path / "MANIFEST.json").write_bytes(data)
    with pytest.raises(ManifestError, match=re.escape(fragment)):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        pytest.param(lambda p: p.mkdir(), "LATEST: is a directory", id="latest-directory"),
        pytest.param(lambda p: p.write_bytes(b"../../etc\n"), "not a version name", id="latest-traversal"),
        pytest.param(lambda p: p.write_bytes(b"v1\xff"), "not UTF-8", id="latest-binary"),
        pytest.param(lambda p: p.write_bytes(b"v" * 5000), "over the limit of 1024", id="latest-huge"),
    ],
)
def test_latest_pointer_damage_is_named(tmp_path, make, fragment):
    store = LocalStore(tmp_path / "store")
    ns = tmp_path / "store" / "persona_e_mexican_vegan"
    ns.mkdir(parents=True)
    make(ns / "LATEST")
    with pytest.raises(InputFileError, match=fragment):
        store.latest("persona_e_mexican_vegan")


# --- feedback ingest (real PostgreSQL) ---------------------------------------------------------

import json as _json  # noqa: E402

from dpo_tasks.feedback.ingest import ingest  # noqa: E402

P = "persona_e_mexican_vegan"




def _stored(conn) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute("SELECT id, persona_id, prompt, response, rating, comment, source_key FROM feedback ORDER BY id")
        rows = cur.fetchall()
    conn.rollback()
    return rows


def j(**fields) -> bytes:
    row = {"persona_id": P, "prompt": "tacos?", "response": "Bean tacos", "rating": "good"} | fields
    return _json.dumps(row, ensure_ascii=False).encode() + b"\n"


CSV_HEAD = b"persona_id,prompt,response,rating,comment\n"


def c(response: str = "Bean tacos", rating: str = "up", comment: str = "") -> bytes:
    return f"{P},tacos?,{response},{rating},{comment}\n".encode()


# (name, bytes loaded first or None, file name, bytes, (inserted, already, conflicts, bad), error fragments)
INGEST_CASES = [
    pytest.param(None, "a.jsonl", j() + j(rating="bad"), (2, 0, 0, 0), [], id="ingest-valid"),
    pytest.param(None, "a.jsonl", j() + j(prompt="t\xff").replace(b"t\xc3\xbf", b"t\xff") + j(response="x"), (2, 0, 0, 1),
                 ["a.jsonl:2: not UTF-8"], id="ingest-bad-byte-line"),
    pytest.param(None, "a.jsonl", j(prompt="tacos\u2028por favor") + j(prompt="x\u0085y"), (2, 0, 0, 0), [], id="ingest-u2028-u0085"),
    pytest.param(None, "a.jsonl", b"\xef\xbb\xbf" + j() + j(rating="bad"), (2, 0, 0, 0), [], id="ingest-bom"),
    pytest.param(None, "a.jsonl", j() + b"[" * 50_000 + b"\n" + j(rating="bad"), (2, 0, 0, 1), ["a.jsonl:2: ", "nested deeper"],
                 id="ingest-deep-json"),
    pytest.param(None, "a.jsonl", j() + b'{"rating": ' + b"1" * 5000 + b"}\n", (1, 0, 0, 1), ["a.jsonl:2: ", "4300 digits"],
                 id="ingest-huge-number"),
    pytest.param(None, "a.jsonl", j() + b'{"persona_id": "' + P.encode() + b'", "prompt": "\\udc00", "response": "r", "rating": "good"}\n',
                 (1, 0, 0, 1), ["a.jsonl:2: ", "lone UTF-16 surrogate"], id="ingest-lone-surrogate"),
    pytest.param(None, "a.jsonl", j(comment="a\x00b"), (0, 0, 0, 1), ["a.jsonl:1: field 'comment' contains a NUL"], id="ingest-nul"),
    pytest.param(None, "a.jsonl", j(comment="tab\there\r\nback\\slash \\N"), (1, 0, 0, 0), [], id="ingest-copy-escapes"),
    pytest.param(None, "a.jsonl", j(comment="x'); DROP TABLE feedback; --"), (1, 0, 0, 0), [], id="ingest-sql-text"),
    pytest.param(None, "a.jsonl", b'["a"]\n' + j(), (1, 0, 0, 1), ["a.jsonl:1: expected an object"], id="ingest-json-array-line"),
    pytest.param(None, "a.jsonl", j(id="x" * 300), (0, 0, 0, 1), ["at most 256 characters"], id="ingest-id-too-long"),
    pytest.param(None, "a.jsonl", j(id={"a": 1}), (0, 0, 0, 1), ["field 'id' = {'a': 1} must be a string"], id="ingest-id-object"),
    pytest.param(None, "a.jsonl", j(id="a\nb"), (0, 0, 0, 1), ["must be printable"], id="ingest-id-newline"),
    pytest.param(None, "a.jsonl", j(created_at="yesterday"), (0, 0, 0, 1), ["not an ISO 8601 time"], id="ingest-bad-time"),
    pytest.param(None, "a.jsonl", j(persona_id=P + "\n"), (0, 0, 0, 1), ["field 'persona_id'", "is invalid"], id="ingest-persona-newline"),
    pytest.param(None, "a.jsonl", j(rating=["good"]), (0, 0, 0, 1), ["field 'rating' = ['good'] is invalid"], id="ingest-rating-list"),
    pytest.param(None, "a.jsonl", j(prompt="p" * 100_001), (0, 0, 0, 1), ["is 100001 characters long (limit 100000)"], id="ingest-text-limit"),
    pytest.param(None, "a.jsonl", b"", (0, 0, 0, 0), [], id="ingest-empty"),
    pytest.param(None, "a.csv", CSV_HEAD + c() + c("Bad \xff byte").replace(b"\xc3\xbf", b"\xff") + c("Beef", "down"), (2, 0, 0, 1),
                 ["a.csv:3: not UTF-8"], id="csv-bad-byte-row"),
    pytest.param(None, "a.csv", CSV_HEAD + c("r" * 150_000) + c("Beef", "down"), (1, 0, 0, 1),
                 ["a.csv:2: a field is longer than 131072"], id="csv-field-over-csv-limit"),
    pytest.param(None, "a.csv", CSV_HEAD + c("r" * 120_000) + c("Beef", "down"), (1, 0, 0, 1),
                 ["a.csv:2: field 'response' is 120000 characters long (limit 100000)"], id="csv-field-over-text-limit"),
    pytest.param(None, "a.csv", CSV_HEAD + c() + c('"unterminated') + c("Beef", "down") + c("Rice", "up"), (3, 0, 0, 1),
                 ["a.csv:3: unterminated quoted field"], id="csv-unterminated-quote"),
    pytest.param(None, "a.csv", CSV_HEAD + c('"never closed') + b"".join(c(f"r{i}") for i in range(2500)), (2500, 0, 0, 1),
                 ["a.csv:2: unterminated quoted field"], id="csv-unterminated-quote-long-tail"),
    pytest.param(None, "a.csv", CSV_HEAD + c('"Bean tacos\nwith salsa"') + c("Beef", "down"), (2, 0, 0, 0), [], id="csv-multiline-cell"),
    pytest.param(None, "a.csv", b"\xef\xbb\xbf" + CSV_HEAD + c(), (1, 0, 0, 0), [], id="csv-bom"),
    pytest.param(None, "a.csv", (CSV_HEAD + c() + c("Beef", "down")).replace(b"\n", b"\r\n"), (2, 0, 0, 0), [], id="csv-crlf"),
    pytest.param(None, "a.csv", CSV_HEAD, (0, 0, 0, 0), [], id="csv-header-only"),
    pytest.param(None, "a.csv", CSV_HEAD + c() + c("x", "up", "c,extra"), (1, 0, 0, 1), ["a.csv:3: 1 more cell(s)"], id="csv-extra-cell"),
    pytest.param(None, "a.csv", CSV_HEAD + c() + f'{P},t,x"y,up,\n'.encode(), (2, 0, 0, 0), [], id="csv-stray-quote-in-cell"),
    pytest.param(None, "a.csv", CSV_HEAD + c() + f'{P},t,"x"y,up,\n'.encode() + c("z"), (2, 0, 0, 1), ["a.csv:3: malformed CSV"],
                 id="csv-text-after-closing-quote"),
    pytest.param(None, "a.csv", b"persona_id,prompt,response,Rating\n" + f"{P},t,r,up\n".encode(), (0, 0, 0, 1),
                 ["unknown field(s) ['Rating']"], id="csv-unknown-column"),
    pytest.param(None, "a.jsonl", j(id="app-1") + j(id="app-1"), (1, 1, 0, 0), [], id="same-id-same-content-in-file"),
    pytest.param(None, "a.jsonl", j(id="app-1") + j(id="app-1", rating="bad"), (1, 0, 1, 0),
                 ["a.jsonl:2: conflicts with stored feedback row 1", "rating 'good'"], id="same-id-conflict-in-file"),
    pytest.param(j(id="app-1"), "b.jsonl", j(id="app-1", rating="bad"), (0, 0, 1, 0),
                 ["b.jsonl:1: conflicts with stored feedback row 1"], id="existing-id-conflict"),
    pytest.param(j(id="app-1"), "b.jsonl", j(id="app-1"), (0, 1, 0, 0), [], id="existing-id-same"),
    pytest.param(j(), "b.jsonl", j(), (1, 0, 0, 0), [], id="identical-id-less-rating-in-later-file"),
    pytest.param(j() + j(rating="bad"), "a.jsonl", j() + j(rating="bad"), (0, 2, 0, 0), [], id="same-file-twice"),
    pytest.param(j() + j(rating="bad"), "a.jsonl", j() + j(rating="bad") + j() + j(response="new"), (2, 2, 0, 0), [],
                 id="appended-file"),
    pytest.param(j() + j(rating="bad"), "a.jsonl", j(response="changed") + j(rating="bad"), (1, 1, 0, 0), [],
                 id="same-name-edited-line"),
    pytest.param(None, "a.jsonl", j() + j() + j(), (3, 0, 0, 0), [], id="identical-id-less-in-one-file"),
]


@pytest.mark.parametrize(("before", "name", "data", "counts", "fragments"), INGEST_CASES)
def test_feedback_ingest(db, tmp_path, before, name, data, counts, fragments):
    if before is not None:
        (tmp_path / "first").mkdir()
        first = tmp_path / "first" / name.replace("b.", "a.")
        first.write_bytes(before)
        ingest(db, first, known_personas={P})
    stored = _stored(db)
    path = tmp_path / name
    path.write_bytes(data)
    report = ingest(db, path, known_personas={P})
    assert (report.inserted, report.already_loaded, report.conflicts, report.bad_rows) == counts, report.errors
    for fragment in fragments:
        assert any(fragment in e for e in report.errors), (fragment, report.errors)
    assert len(report.errors) == counts[2] + counts[3]
    after = _stored(db)
    # Nothing stored changed, and every reported-good row is there.
    assert after[: len(stored)] == stored
    assert len(after) == len(stored) + counts[0]
    assert report.rows == report.valid + report.bad_rows
    assert path.read_bytes() == data


def test_ingest_keeps_text_verbatim(db, tmp_path):
    text = "tab\there\r\nback\\slash \\N \u2028 \u0085 ü"
    path = tmp_path / "a.jsonl"
    path.write_bytes(j(comment=text, prompt="tacos\u2028?"))
    ingest(db, path, known_personas={P})
    (row,) = _stored(db)
    assert row[5] == text and row[2] == "tacos\u2028?"


def test_ingest_directory_is_exit_2(tmp_path, capsys):
    rc = cli.main(["ingest-feedback", str(tmp_path), "--dry-run", "--any-persona"])
    err = capsys.readouterr().err
    assert rc == 2 and "is a directory, expected a feedback file" in err and "Traceback" not in err


def test_ingest_dry_run_counts_without_a_database(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    path.write_bytes(j() + b"{bad\n" + j(rating="bad"))
    rc = cli.main(["ingest-feedback", str(path), "--dry-run", "--any-persona"])
    out = capsys.readouterr()
    assert rc == 1 and "3 rows, 2 valid, 1 bad" in out.out and "a.jsonl:2: not valid JSON" in out.err


# --- PII in feedback text, retention of community and feedback data --------------------------

from dpo_tasks.feedback.export import export as export_feedback  # noqa: E402
from dpo_tasks.feedback.pii import scrub  # noqa: E402
from dpo_tasks.retention import RETENTION_ENV, cleanup_run  # noqa: E402


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("send it to jane.doe@example.com please", "send it to <EMAIL_ADDRESS> please", id="pii-email"),
        pytest.param("call me at +1 (415) 555-0132 tonight", "call me at <PHONE_NUMBER> tonight", id="pii-phone-us"),
        pytest.param("ring 020 7946 0958", "ring <PHONE_NUMBER>", id="pii-phone-uk"),
        pytest.param("card 4111 1111 1111 1111 ok", "card <CREDIT_CARD> ok", id="pii-card"),
        pytest.param("IBAN DE89 3704 0044 0532 0130 00 thanks", "IBAN <IBAN_CODE> thanks", id="pii-iban"),
        pytest.param("deliver to 221B Baker Street, London", "deliver to <STREET_ADDRESS>, London", id="pii-street"),
        pytest.param("ship to 1600 Pennsylvania Avenue NW, apt 5 now", "ship to <STREET_ADDRESS> now", id="pii-street-apt"),
        pytest.param("my box is 10.1.2.3", "my box is <IP_ADDRESS>", id="pii-ip"),
        pytest.param("Bake 20 minutes at 180 C, 2 tbsp oil, serves 4, 350 F", "Bake 20 minutes at 180 C, 2 tbsp oil, serves 4, 350 F",
                     id="pii-recipe-numbers-kept"),
        pytest.param("Add 1 cup rice and 2 cups water; 1 1/2 tsp salt", "Add 1 cup rice and 2 cups water; 1 1/2 tsp salt",
                     id="pii-measures-kept"),
        pytest.param("", "", id="pii-empty"),
    ],
)
def test_pii_scrub(text, expected):
    assert scrub(text)[0] == expected


def test_feedback_export_scrubs_pii_before_it_is_written(db, tmp_path):
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO feedback (persona_id, prompt, response, rating) VALUES (%s, %s, %s, %s)",
            [(P, "vegan tacos for jane.doe@example.com?", "Bean tacos, call 415-555-0132", "good"),
             (P, "vegan tacos for jane.doe@example.com?", "Beef tacos", "bad")],
        )
    db.commit()
    summary = export_feedback(db, P, str(tmp_path / "run"), 0, 10)
    text = (tmp_path / "run" / "feedback_pairs.jsonl").read_text() + (tmp_path / "run" / "feedback_prompts.jsonl").read_text()
    assert "jane.doe@example.com" not in text and "555-0132" not in text
    assert "<EMAIL_ADDRESS>" in text and "<PHONE_NUMBER>" in text
    assert summary["pii_scrubbed"] == {"EMAIL_ADDRESS": 2, "PHONE_NUMBER": 1} and summary["pairs"] == 1
    # The stored ratings are the app's record and stay as they were.
    assert "jane.doe@example.com" in _stored(db)[0][2]


def _run_dir_with_data(tmp_path):
    run = tmp_path / "run"
    (run / "train" / "adapter").mkdir(parents=True)
    for name in ("community_dataset.raw", "dpo.jsonl", "feedback_pairs.jsonl", "feedback_prompts.jsonl", "gate.json",
                 "train/adapter/adapter_model.safetensors"):
        (run / name).write_text("x")
    staging = tmp_path / "staging"
    (staging / "inputs").mkdir(parents=True)
    (staging / "inputs" / "dpo.jsonl").write_text("x")
    return run, staging


@pytest.mark.parametrize(
    ("policy", "community", "gone"),
    [
        pytest.param(None, True, {"community_dataset.raw", "dpo.jsonl", "feedback_pairs.jsonl", "feedback_prompts.jsonl"},
                     id="retention-default-community"),
        pytest.param("delete", False, {"feedback_pairs.jsonl", "feedback_prompts.jsonl"}, id="retention-persona-run"),
        pytest.param("keep", True, set(), id="retention-keep"),
        pytest.param(" KEEP ", True, set(), id="retention-keep-spelling"),
    ],
)
def test_retention_cleanup(tmp_path, monkeypatch, policy, community, gone):
    if policy is None:
        monkeypatch.delenv(RETENTION_ENV, raising=False)
    else:
        monkeypatch.setenv(RETENTION_ENV, policy)
    run, staging = _run_dir_with_data(tmp_path)
    before = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    result = cleanup_run(run, community=community, staging=str(staging))
    after = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert before - after == gone and set(result["removed"]) == gone
    assert "train/adapter/adapter_model.safetensors" in after and "gate.json" in after
    assert staging.exists() == (not gone)


def test_retention_typo_is_an_error_and_removes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(RETENTION_ENV, "forever")
    run, staging = _run_dir_with_data(tmp_path)
    with pytest.raises(ConfigError, match="PERSONA_DPO_RETENTION = 'forever' is invalid"):
        cleanup_run(run, community=True, staging=str(staging))
    assert (run / "community_dataset.raw").exists() and (staging / "inputs" / "dpo.jsonl").exists()


def test_failed_community_prepare_leaves_no_copy(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from dpo_tasks.orchestration import tasks

    monkeypatch.delenv(RETENTION_ENV, raising=False)
    monkeypatch.setenv("PERSONA_DPO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PERSONA_DPO_LOCAL_UPLOAD_ROOT", str(tmp_path / "uploads"))
    upload = tmp_path / "uploads" / "tofu-club" / "data.jsonl"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(rec(chosen="same", rejected="same") + b"\n")
    params = {"communityId": "tofu-club", "dataset": None, "dataset_uri": str(upload), "persona": "persona_e_mexican_vegan",
              "eval_judge": "rules", "epochs": 1, "min_win_rate_lower_bound": 0.5, "dry_run": False, "overrides": {}}
    ctx = {"params": params, "dag_run": SimpleNamespace(conf={}), "run_id": "manual__1"}
    monkeypatch.setattr(tasks, "_context", lambda: ctx)
    with pytest.raises(AirflowFailException, match="no usable row"):
        tasks.prepare_custom_run()
    leftovers = [p.name for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert "community_dataset.raw" not in leftovers and "dpo.jsonl" not in leftovers
    assert upload.exists(), "the community's own upload is theirs"
    assert tasks.cleanup_run_data(None) is None


# --- a user's prompt pool (generation.prompt_pool) --------------------------------------------

from dpo_tasks.prompts import read_prompt_pool  # noqa: E402


@pytest.mark.parametrize(
    ("data", "ids", "logged"),
    [
        pytest.param('{"id": "a", "prompt": "Tacos\u2028for two?"}\n{"id": "b", "prompt": "Mole\u0085tonight?"}\n'.encode(),
                     ["a", "b"], [], id="pool-unicode-line-breaks-kept"),
        pytest.param(b'{"id": "a", "prompt": "Tac\xffos?"}\n{"id": "b", "prompt": "Mole?"}\n', ["b"], ["pool.jsonl:1: not UTF-8"],
                     id="pool-bad-byte-line-skipped"),
        pytest.param(b'{"id": "a", "prompt": ' + b"[" * 10_000 + b"\n" + b'{"id": "b", "prompt": "Mole?"}\n', ["b"],
                     ["pool.jsonl:1: not usable JSON: nested deeper than 64"], id="pool-deep-line-skipped"),
    ],
)
def test_prompt_pool_lines(tmp_path, caplog, data, ids, logged):
    path = tmp_path / "pool.jsonl"
    path.write_bytes(data)
    with caplog.at_level("WARNING"):
        rows = read_prompt_pool(path)
    assert [r["id"] for r in rows] == ids
    if ids == ["a", "b"]:
        assert rows[0]["prompt"] == "Tacos\u2028for two?"
    for fragment in logged:
        assert fragment in caplog.text


def test_prompt_pool_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it \\(is a directory, expected a prompt pool\\)"):
        read_prompt_pool(tmp_path)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param(b"v1\xff", "not UTF-8", id="gcs-latest-binary"),
        pytest.param(b"../other", "not a version name", id="gcs-latest-traversal"),
        pytest.param(b"v" * 2000, "over the limit of 1024", id="gcs-latest-huge"),
    ],
)
def test_gcs_latest_pointer_damage_is_named(tmp_path, monkeypatch, data, fragment):
    """Against gcp-storage-emulator, started the way the store tests start it."""
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(__file__).parent.parent / "dpo_tasks" / "store" / "gcs_emulator.py"
    server = subprocess.Popen([sys.executable, str(script), str(port), "b"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "gcs emulator did not start"
                time.sleep(0.1)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        from dpo_tasks.store.gcs import GCSStore, make_client

        client = make_client()
        client.bucket("b").blob("store/persona_e_mexican_vegan/LATEST").upload_from_string(data)
        store = GCSStore("gs://b/store", client=client)
        with pytest.raises(InputFileError, match=re.escape(fragment)):
            store.latest("persona_e_mexican_vegan")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_history_line_too_deep_is_skipped_not_a_traceback(tmp_path, caplog):
    from dpo_tasks.store.base import parse_history

    text = '{"version": "v1"}\n' + "[" * 100_000 + "\n" + '{"version": "v2", "n": ' + "9" * 5000 + "}\n" + '{"version": "v3"}\n'
    with caplog.at_level("WARNING"):
        records = parse_history(text, "HISTORY.jsonl")
    assert [r["version"] for r in records] == ["v1", "v3"]
    assert "HISTORY.jsonl line 2 is not a history record" in caplog.text and "line 3" in caplog.text
