from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dpo_tasks.feedback.ingest import ingest, normalize_rating

PERSONAS = {"persona_b_indian_veg", "persona_e_mexican_vegan"}
INJECTION = "nice'); DROP TABLE feedback; --"


def _rows(db):
    with db.cursor() as cur:
        cur.execute("SELECT persona_id, prompt, response, rating, comment, model_version FROM feedback ORDER BY id")
        rows = cur.fetchall()
    db.rollback()
    return rows


def test_jsonl_bad_rows_are_reported_by_line_and_good_rows_kept(db, tmp_path):
    lines = [
        {"persona_id": "persona_b_indian_veg", "prompt": "paneer curry?", "response": "Paneer tikka ...", "rating": "good", "model_version": "v3"},
        {"persona_id": "persona_b_indian_veg", "prompt": "paneer curry?", "response": "Chicken tikka ...", "rating": "thumbs_down", "comment": INJECTION},
        {"persona_id": "persona_b_indian_veg", "prompt": "dal?", "response": "Dal ...", "rating": "meh"},
        {"persona_id": "persona_zz_unknown", "prompt": "x", "response": "y", "rating": "good"},
        {"persona_id": "x'; DROP TABLE feedback; --", "prompt": "x", "response": "y", "rating": "bad"},
        {"persona_id": "persona_e_mexican_vegan", "prompt": "  ", "response": "y", "rating": "bad"},
        {"persona_id": "persona_e_mexican_vegan", "prompt": "tacos", "response": "y", "rating": "bad", "stars": 5},
        {"persona_id": "persona_e_mexican_vegan", "prompt": "tacos", "response": "bean tacos", "rating": 1, "created_at": "2026-01-02T03:04:05"},
    ]
    text = "\n".join(json.dumps(r) for r in lines[:3]) + "\n{not json\n\n" + "\n".join(json.dumps(r) for r in lines[3:]) + "\n"
    path = tmp_path / "feedback.jsonl"
    path.write_text(text)

    report = ingest(db, path, known_personas=PERSONAS)

    assert report.rows == 9 and report.inserted == 3
    errors = "\n".join(report.errors)
    assert len(report.errors) == 6
    assert "feedback.jsonl:3: field 'rating' = 'meh' is invalid" in errors
    assert "feedback.jsonl:4: not valid JSON" in errors
    assert "feedback.jsonl:6: field 'persona_id' = 'persona_zz_unknown' is not a persona" in errors
    assert "feedback.jsonl:7: field 'persona_id' = \"x'; DROP TABLE feedback; --\" is invalid" in errors
    assert "feedback.jsonl:8: field 'prompt' is required" in errors
    assert "feedback.jsonl:9: unknown field(s) ['stars']" in errors
    rows = _rows(db)
    assert [r[3] for r in rows] == ["good", "bad", "good"]
    # The comment is data, stored verbatim.
    assert rows[1][4] == INJECTION
    assert rows[0][5] == "v3"


def test_csv_with_quoted_multiline_cells(db, tmp_path):
    path = tmp_path / "feedback.csv"
    path.write_text(
        "persona_id,prompt,response,rating,comment\n"
        'persona_e_mexican_vegan,tacos,"Bean tacos\nwith salsa",up,"said ""great"""\n'
        "persona_e_mexican_vegan,tacos,Beef tacos,down,\n"
        "persona_e_mexican_vegan,tacos,Fish tacos,sideways,\n"
        "persona_e_mexican_vegan,tacos,too,many,cells,here\n"
    )
    report = ingest(db, path, known_personas=PERSONAS)
    assert report.inserted == 2
    assert report.errors == [
        "feedback.csv:5: field 'rating' = 'sideways' is invalid: use good or bad (or up/down, 1/0)",
        "feedback.csv:6: 1 more cell(s) than the header has",
    ]
    rows = _rows(db)
    assert rows[0][2] == "Bean tacos\nwith salsa" and rows[0][4] == 'said "great"'
    assert rows[1][3] == "bad" and rows[1][4] is None


def test_loading_the_same_file_twice_inserts_nothing_twice(db, tmp_path):
    same = {"persona_id": "persona_b_indian_veg", "prompt": "dal?", "response": "Dal tadka", "rating": "good"}
    path = tmp_path / "again.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        same, same,  # two users, same rating: two rows
        {**same, "rating": "bad"},
        {**same, "id": "app-17"}, {**same, "id": "app-18", "comment": "changed"},
    ]) + "\n")
    first = ingest(db, path, known_personas=PERSONAS)
    assert (first.inserted, first.already_loaded) == (5, 0)
    second = ingest(db, path, known_personas=PERSONAS)
    assert (second.inserted, second.already_loaded) == (0, 5)
    rows = _rows(db)
    assert len(rows) == 5
    with db.cursor() as cur:
        cur.execute("SELECT total, good FROM feedback_rollup")
        assert cur.fetchall() == [(5, 4)]
    db.rollback()


@pytest.mark.parametrize(
    "value, expected",
    [
        pytest.param("GOOD", "good", id="case"),
        pytest.param(" down ", "bad", id="spaces"),
        pytest.param(True, "good", id="json-true"),
        pytest.param(0, "bad", id="zero"),
        pytest.param(-1, "bad", id="minus-one"),
    ],
)
def test_normalize_rating(value, expected):
    assert normalize_rating(value) == expected


def test_cli_ingest_exit_status_and_report(db, tmp_path, feedback_db_url):
    path = tmp_path / "in.jsonl"
    path.write_text(
        json.dumps({"persona_id": "persona_b_indian_veg", "prompt": "p", "response": "r", "rating": "bad"}) + "\n"
        + json.dumps({"persona_id": "persona_b_indian_veg", "prompt": "p", "response": "r", "rating": "?"}) + "\n"
    )
    env = {**os.environ, "FEEDBACK_DB_URL": feedback_db_url}
    result = subprocess.run([sys.executable, "-m", "dpo_tasks", "ingest-feedback", str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert "in.jsonl:2: field 'rating' = '?' is invalid" in result.stderr
    assert "2 rows, 1 inserted, 0 already loaded, 1 bad" in result.stdout
    assert len(_rows(db)) == 1
