"""Bad input files, table-driven: personas.yaml, the shared loaders, run files and feedback ingest.

Every case asserts the exact outcome, either a clear error that names the problem and
the place (file, line, persona) or a correct acceptance, and that nothing already
stored changed: the input file's bytes, the run directory, the feedback rows.
A traceback (any exception other than the documented error) fails the case.
"""

from __future__ import annotations

import hashlib
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
    pytest.param(personas_text(good="    overrides: {training: {kubernetes: {memory: lots}}}\n"), GOOD,
                 ["overrides.training.kubernetes.memory", "'lots' is not a Kubernetes quantity"], id="memory-lots"),
    pytest.param(personas_text(good="    overrides: {training: {kubernetes: {memory: '64'}}}\n"), GOOD,
                 ["add a suffix"], id="memory-no-suffix"),
    pytest.param(personas_text(good="    overrides: {training: {kubernetes: {cpu: '-1'}}}\n"), GOOD,
                 ["not a Kubernetes quantity"], id="cpu-negative"),
    pytest.param(personas_text(good="    overrides: {training: {kubernetes: {cpu: '0'}}}\n"), GOOD,
                 ["positive"], id="cpu-zero"),
    pytest.param(personas_text(good="    overrides: {training: {kubernetes: {ephemeral_storage: 10 Gi}}}\n"), GOOD,
                 ["ephemeral_storage", "not a Kubernetes quantity"], id="ephemeral-space"),
    pytest.param(personas_text(good="    overrides: {training: {kubernetes: {cpu: 500m, memory: 1.5Gi, ephemeral_storage: 100G}}}\n"),
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
