from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import time

import pytest

from dpo_tasks.config import FeedbackConfig
from dpo_tasks.feedback.rule import Window, claim_crossing, decide, poll_window

NOW = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.timezone.utc)
RULE = FeedbackConfig(min_feedback=50, max_good_ratio=0.6, cooldown_hours=24)
PERSONA = "persona_b_indian_veg"


def _window(total: int, good: int, last_trigger_hours_ago: float | None = None) -> Window:
    last = None if last_trigger_hours_ago is None else NOW - dt.timedelta(hours=last_trigger_hours_ago)
    return Window(PERSONA, 0, total, total, good, last, NOW)


@pytest.mark.parametrize(
    "window, retrain, reason",
    [
        pytest.param(_window(50, 30), True, "30/50 good", id="exactly-min-feedback-and-exactly-the-ratio"),
        pytest.param(_window(49, 10), False, "49 new feedback < min_feedback 50", id="one-below-min-feedback"),
        pytest.param(_window(50, 31), False, "31/50 = 0.620 > max_good_ratio 0.6", id="one-good-too-many"),
        pytest.param(_window(0, 0), False, "0 new feedback", id="no-feedback"),
        pytest.param(_window(60, 0, last_trigger_hours_ago=23.9), False, "cooldown", id="inside-cooldown"),
        pytest.param(_window(60, 0, last_trigger_hours_ago=24), True, "over 60 >= 50", id="cooldown-exactly-over"),
        pytest.param(_window(60, 0, last_trigger_hours_ago=100), True, "0/60 good", id="long-after-cooldown"),
    ],
)
def test_decide(window, retrain, reason):
    decision = decide(window, RULE)
    assert decision.retrain is retrain
    assert reason in decision.reason


@pytest.mark.parametrize(
    "rule, total, good, retrain",
    [
        pytest.param(FeedbackConfig(min_feedback=10, max_good_ratio=0.3, cooldown_hours=0), 10, 3, True, id="ratio-0.3-at-edge"),
        pytest.param(FeedbackConfig(min_feedback=10, max_good_ratio=0.7, cooldown_hours=0), 10, 7, True, id="ratio-0.7-at-edge"),
        pytest.param(FeedbackConfig(min_feedback=3, max_good_ratio=1 / 3, cooldown_hours=0), 3, 1, True, id="ratio-one-third"),
        pytest.param(FeedbackConfig(min_feedback=1, max_good_ratio=0.0, cooldown_hours=0), 5, 1, False, id="ratio-zero-one-good"),
        pytest.param(FeedbackConfig(min_feedback=1, max_good_ratio=0.0, cooldown_hours=0), 5, 0, True, id="ratio-zero-all-bad"),
    ],
)
def test_ratio_edges_are_inclusive_despite_float_rounding(rule, total, good, retrain):
    assert decide(_window(total, good), rule).retrain is retrain


def test_poll_reads_only_feedback_above_the_watermark(db, add_feedback):
    add_feedback(PERSONA, good=5, bad=15)
    add_feedback("persona_c_italian_gf", good=100, bad=0)
    window = poll_window(db, PERSONA)
    assert (window.from_id, window.total, window.good, window.last_trigger_at) == (0, 20, 5, None)
    with db.cursor() as cur:
        cur.execute("INSERT INTO feedback_watermarks (persona_id, last_feedback_id) VALUES (%s, 10)", (PERSONA,))
    db.commit()
    window = poll_window(db, PERSONA)
    # ids 1-5 good, 6-20 bad: above id 10 only bad ones remain
    assert (window.from_id, window.to_id, window.total, window.good) == (10, 20, 10, 0)


def test_claim_moves_the_watermark_once_per_crossing(db, add_feedback):
    add_feedback(PERSONA, good=30, bad=20)
    claim, decision = claim_crossing(db, PERSONA, RULE, claim_key="monitor-run-1")
    assert claim is not None, decision.reason
    assert (claim.from_id, claim.to_id, claim.total, claim.good) == (0, 50, 50, 30)
    assert claim.conf()["feedback"]["to_id"] == 50
    assert claim.run_id == f"feedback__{PERSONA}__0-50"

    again, decision = claim_crossing(db, PERSONA, RULE, claim_key="monitor-run-2")
    assert again is None
    assert "0 new feedback" in decision.reason

    # A retried task with the same key gets its own claim back, nothing new.
    retried, _ = claim_crossing(db, PERSONA, RULE, claim_key="monitor-run-1")
    assert retried == claim
    window = poll_window(db, PERSONA)
    assert (window.from_id, window.total) == (50, 0)
    assert window.last_trigger_at is not None


def test_cooldown_holds_back_the_next_crossing(db, add_feedback):
    add_feedback(PERSONA, good=0, bad=50)
    assert claim_crossing(db, PERSONA, RULE, claim_key="a")[0] is not None
    add_feedback(PERSONA, good=0, bad=50)
    claim, decision = claim_crossing(db, PERSONA, RULE, claim_key="b")
    assert claim is None and "cooldown" in decision.reason
    with db.cursor() as cur:
        cur.execute("UPDATE feedback_watermarks SET last_trigger_at = now() - interval '25 hours'")
    db.commit()
    claim, _ = claim_crossing(db, PERSONA, RULE, claim_key="b")
    assert claim is not None and (claim.from_id, claim.to_id) == (50, 100)


@pytest.mark.parametrize(
    "persona_id",
    [
        pytest.param("x'; DROP TABLE feedback; --", id="quote-drop"),
        pytest.param("persona_b_indian_veg' OR '1'='1", id="or-true"),
        pytest.param("%(persona_id)s", id="param-placeholder"),
    ],
)
def test_sql_injection_in_persona_id_matches_nothing_and_drops_nothing(db, add_feedback, persona_id):
    add_feedback(PERSONA, good=0, bad=60)
    window = poll_window(db, persona_id)
    assert window.total == 0
    rule = FeedbackConfig(min_feedback=1, max_good_ratio=1, cooldown_hours=0)
    claim, _ = claim_crossing(db, persona_id, rule, claim_key=f"k-{persona_id}")
    assert claim is None
    assert poll_window(db, PERSONA).total == 60


RACER = textwrap.dedent(
    """
    import json, sys, time
    import psycopg2
    from dpo_tasks.config import FeedbackConfig
    from dpo_tasks.feedback.rule import claim_crossing

    url, persona, key, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    conn = psycopg2.connect(url)
    rule = FeedbackConfig(min_feedback=10, max_good_ratio=0.5, cooldown_hours=0)
    while time.time() < start:
        time.sleep(0.001)
    claim, decision = claim_crossing(conn, persona, rule, claim_key=key)
    print(json.dumps(None if claim is None else claim.conf()))
    """
)


def test_two_monitor_processes_racing_trigger_once(db, add_feedback, feedback_db_url):
    claims = []
    for round_ in range(3):
        add_feedback(PERSONA, good=2, bad=10, prompt=f"round {round_}")
        # Both processes are started and connected before the shared start time, then claim at once.
        start = time.time() + 2.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, feedback_db_url, PERSONA, f"monitor-{m}-round-{round_}", str(start)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for m in ("a", "b")
        ]
        outs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
        results = [json.loads(o[0]) for o in outs]
        won = [r for r in results if r is not None]
        assert len(won) == 1, results
        claims.append(won[0]["feedback"])
    with db.cursor() as cur:
        cur.execute("SELECT from_id, to_id FROM feedback_triggers ORDER BY id")
        rows = cur.fetchall()
    assert rows == [(0, 12), (12, 24), (24, 36)]
    assert [(c["from_id"], c["to_id"]) for c in claims] == rows


def _brute_force(db, persona_id: str, last_id: int) -> tuple[int, int]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE rating = 'good') FROM feedback WHERE persona_id = %s AND id > %s",
            (persona_id, last_id),
        )
        row = cur.fetchone()
    db.rollback()
    return row


def test_rollup_keeps_the_poll_exact_across_blocks_updates_and_deletes(db):
    personas = [PERSONA, "persona_c_italian_gf", "persona_e_mexican_vegan"]
    with db.cursor() as cur:
        # ~5000 rows over five 1024-id blocks, in one statement and then one row at a time.
        cur.execute(
            "INSERT INTO feedback (persona_id, prompt, response, rating)"
            " SELECT (%s::text[])[1 + g %% 3], 'p', 'r' || g, CASE WHEN g %% 7 < 3 THEN 'good' ELSE 'bad' END"
            " FROM generate_series(1, 4990) g",
            (personas,),
        )
        for i in range(10):
            cur.execute("INSERT INTO feedback (persona_id, prompt, response, rating) VALUES (%s, 'p', 'r', 'good')", (personas[i % 3],))
        # Users change their minds, and some rows are deleted.
        cur.execute("UPDATE feedback SET rating = CASE rating WHEN 'good' THEN 'bad' ELSE 'good' END WHERE id % 11 = 0")
        cur.execute("DELETE FROM feedback WHERE id % 13 = 0 OR id BETWEEN 2040 AND 2060")
    db.commit()
    for persona_id in personas:
        for last_id in (0, 1, 1023, 1024, 1025, 2047, 2050, 3001, 4999, 5000):
            with db.cursor() as cur:
                cur.execute(
                    "INSERT INTO feedback_watermarks (persona_id, last_feedback_id) VALUES (%s, %s)"
                    " ON CONFLICT (persona_id) DO UPDATE SET last_feedback_id = excluded.last_feedback_id",
                    (persona_id, last_id),
                )
            db.commit()
            window = poll_window(db, persona_id)
            assert (window.total, window.good) == _brute_force(db, persona_id, last_id), (persona_id, last_id)
    with db.cursor() as cur:
        cur.execute("TRUNCATE feedback")
        cur.execute("SELECT count(*) FROM feedback_rollup")
        assert cur.fetchone()[0] == 0
    db.commit()


def test_claim_waits_for_an_insert_in_flight_below_the_newest_id(db, feedback_db_url, add_feedback):
    """Ids are assigned before commit: a slow writer's row must not end up under the watermark unseen."""
    import threading

    import psycopg2

    slow = psycopg2.connect(feedback_db_url)
    with slow.cursor() as cur:
        cur.execute("INSERT INTO feedback (persona_id, prompt, response, rating) VALUES (%s, 'p', 'slow', 'bad') RETURNING id", (PERSONA,))
        slow_id = cur.fetchone()[0]
    with db.cursor() as cur:
        # Other personas' ratings in between: the next ones land in a later rollup block, whose
        # row the slow writer does not hold (same-block writers wait for each other's commit).
        cur.execute("SELECT setval(pg_get_serial_sequence('feedback', 'id'), 2047)")
    db.commit()
    add_feedback(PERSONA, good=0, bad=10)  # committed, ids 2048-2057, above the slow writer's
    rule = FeedbackConfig(min_feedback=5, max_good_ratio=0.5, cooldown_hours=0)
    result = {}
    claimer = psycopg2.connect(feedback_db_url)
    thread = threading.Thread(target=lambda: result.update(claim=claim_crossing(claimer, PERSONA, rule, claim_key="k")[0]))
    thread.start()
    thread.join(0.7)
    assert thread.is_alive(), "claimed while an insert below its window was still in flight"
    slow.commit()
    thread.join(10)
    slow.close()
    claimer.close()
    claim = result["claim"]
    assert (claim.total, claim.to_id) == (11, 2057) and slow_id == 1


def test_cli_feedback_status_reads_every_persona_without_claiming(db, add_feedback, feedback_db_url):
    import os

    add_feedback(PERSONA, good=10, bad=50)
    env = {**os.environ, "FEEDBACK_DB_URL": feedback_db_url}
    result = subprocess.run([sys.executable, "-m", "dpo_tasks", "feedback-status", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {r["persona_id"]: r for r in json.loads(result.stdout)}
    assert len(rows) == 6
    assert rows[PERSONA]["retrain"] is True and rows[PERSONA]["new_feedback"] == 60 and rows[PERSONA]["good_ratio"] == 0.1667
    assert rows["persona_a_korean_spicy"]["retrain"] is False
    assert "0 new feedback < min_feedback 50" in rows["persona_a_korean_spicy"]["reason"]
    table = subprocess.run([sys.executable, "-m", "dpo_tasks", "feedback-status", "--persona", PERSONA], capture_output=True, text=True, env=env, timeout=120)
    assert "RETRAIN" in table.stdout and PERSONA in table.stdout
    # Status only reads: the watermark did not move.
    assert poll_window(db, PERSONA).from_id == 0
