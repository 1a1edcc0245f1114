"""The feedback trigger and sensor against the real local PostgreSQL (a throwaway database)."""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException, TaskDeferred

from dpo_tasks.feedback.db import create_database, drop_database, migrate
from dpo_tasks.feedback.sensor import FeedbackThresholdSensor, FeedbackThresholdTrigger

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"

ADMIN_URL = os.environ.get("PERSONA_DPO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PERSONA = "persona_d_japanese_lowsodium"
CONN_ENV = "AIRFLOW_CONN_FEEDBACK_DB"


@pytest.fixture(scope="module")
def db_url():
    url = create_database(ADMIN_URL, prefix="test_feedback_sensor")
    conn = psycopg2.connect(url)
    migrate(conn)
    conn.close()
    yield url
    drop_database(ADMIN_URL, url)


@pytest.fixture
def db(db_url, monkeypatch):
    """An emptied database that the Airflow connection `feedback_db` points at."""
    monkeypatch.setenv(CONN_ENV, db_url)
    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("TRUNCATE feedback, feedback_watermarks, feedback_triggers RESTART IDENTITY")
    yield conn
    conn.close()


def add(conn, good: int, bad: int) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO feedback (persona_id, prompt, response, rating) VALUES (%s, 'miso-free soup?', %s, %s)",
            [(PERSONA, f"g{i}", "good") for i in range(good)] + [(PERSONA, f"b{i}", "bad") for i in range(bad)],
        )


def logs(capsys) -> list[str]:
    """Log lines: Airflow's task and trigger loggers write through structlog to the captured streams."""
    out = capsys.readouterr()
    return (out.out + out.err).splitlines()


def trigger(**kw) -> FeedbackThresholdTrigger:
    args = dict(persona_id=PERSONA, min_feedback=10, max_good_ratio=0.5, cooldown_hours=0, poll_interval=0.1, max_backoff=0.2)
    args.update(kw)
    return FeedbackThresholdTrigger(**args)


async def first_event(trig: FeedbackThresholdTrigger, timeout: float):
    gen = trig.run()
    try:
        return await asyncio.wait_for(gen.__anext__(), timeout)
    finally:
        await gen.aclose()


def test_plugins_folder_exposes_the_same_classes(monkeypatch):
    # Airflow puts its plugins folder on sys.path; so does this test.
    monkeypatch.syspath_prepend(str(PLUGINS))
    plugin = importlib.import_module("feedback_sensor")
    assert plugin.FeedbackThresholdSensor is FeedbackThresholdSensor
    assert plugin.FeedbackThresholdTrigger is FeedbackThresholdTrigger


def test_trigger_serialize_round_trips():
    trig = trigger(conn_id="other_db", statement_timeout_s=5)
    path, kwargs = trig.serialize()
    module, _, name = path.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert path == "dpo_tasks.feedback.sensor.FeedbackThresholdTrigger"
    assert rebuilt.serialize() == (path, kwargs)
    assert kwargs["min_feedback"] == 10 and kwargs["conn_id"] == "other_db"
    assert not any("postgres" in str(v) for v in kwargs.values()), "no connection details in the trigger row"


def test_trigger_waits_below_the_rule_and_fires_once_it_holds(db):
    add(db, good=6, bad=3)  # 9 < 10

    async def scenario():
        trig = trigger()
        task = asyncio.ensure_future(first_event(trig, timeout=20))
        await asyncio.sleep(0.8)
        assert not task.done(), "fired below min_feedback"
        add(db, good=0, bad=1)  # 10 rows, 6/10 good > 0.5: still no
        await asyncio.sleep(0.5)
        assert not task.done(), "fired above max_good_ratio"
        add(db, good=0, bad=2)  # 12 rows, 6/12 = 0.5: at the ratio
        return await task

    event = asyncio.run(scenario())
    assert event.payload["status"] == "crossing"
    assert {k: event.payload[k] for k in ("persona_id", "from_id", "to_id", "total", "good")} == {
        "persona_id": PERSONA, "from_id": 0, "to_id": 12, "total": 12, "good": 6,
    }


def test_trigger_reports_quiet_at_its_deadline(db):
    add(db, good=9, bad=0)
    start = time.monotonic()
    event = asyncio.run(first_event(trigger(deadline=time.time() + 0.6), timeout=10))
    assert event.payload == {"status": "quiet", "persona_id": PERSONA}
    assert 0.5 <= time.monotonic() - start < 5


def test_trigger_backs_off_while_the_database_is_unreachable(monkeypatch, capsys):
    monkeypatch.setenv(CONN_ENV, "postgresql://postgres@127.0.0.1:1/nowhere")

    async def scenario():
        with pytest.raises(asyncio.TimeoutError):
            await first_event(trigger(), timeout=1.5)

    asyncio.run(scenario())
    warnings = [line for line in logs(capsys) if "unavailable while polling" in line]
    assert len(warnings) >= 2
    assert "feedback_db 'feedback_db' unavailable while polling persona persona_d_japanese_lowsodium (OperationalError" in warnings[0]
    assert "attempt 2 failed" in warnings[1]


def test_server_that_never_answers_is_backed_off_from(monkeypatch, capsys):
    """A host that accepts TCP connections and then says nothing (a hung server or a dead proxy)."""
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    port = hole.getsockname()[1]
    monkeypatch.setenv(CONN_ENV, f"postgresql://postgres@127.0.0.1:{port}/x?connect_timeout=1")
    try:
        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(first_event(trigger(), timeout=3.5))
    finally:
        hole.close()
    warnings = [line for line in logs(capsys) if "unavailable while polling" in line]
    assert warnings and "timeout expired" in warnings[0]


def _terminate_pollers(conn, db_url, keep: int) -> int:
    """pg_terminate_backend the sessions on the test database other than ours and `keep`: the trigger's."""
    dbname = db_url.rsplit("/", 1)[1]
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() AND pid <> %s",
            (dbname, keep),
        )
        return cur.fetchone()[0]


def test_connection_killed_mid_poll_is_retried_and_never_fires_on_partial_data(db, db_url, capsys):
    """The poll is blocked on a lock (a slow query), the server kills its session mid-query, the trigger
    reconnects and fires only with the complete window once the data is committed."""
    add(db, good=0, bad=5)
    locker = psycopg2.connect(db_url)
    with locker.cursor() as cur:
        # Rows committed behind this lock complete the crossing; the trigger must not see a partial count.
        cur.execute("LOCK TABLE feedback IN ACCESS EXCLUSIVE MODE")
        cur.execute("INSERT INTO feedback (persona_id, prompt, response, rating) SELECT %s, 'p', 'r' || g, 'bad' FROM generate_series(1, 7) g", (PERSONA,))

    async def scenario():
        trig = trigger(statement_timeout_s=30)
        task = asyncio.ensure_future(first_event(trig, timeout=30))
        await asyncio.sleep(1.0)  # the poll is now waiting on the lock
        assert not task.done()
        killed = await asyncio.to_thread(_terminate_pollers, db, db_url, locker.get_backend_pid())
        await asyncio.sleep(0.5)
        assert not task.done(), "fired after its connection was killed"
        locker.commit()
        return killed, await task

    killed, event = asyncio.run(scenario())
    locker.close()
    assert killed == 1
    messages = logs(capsys)
    assert any("unavailable while polling" in m for m in messages), messages
    assert any("reachable again after" in m for m in messages), messages
    assert (event.payload["total"], event.payload["good"], event.payload["to_id"]) == (12, 0, 12)


def test_slow_database_hits_the_statement_timeout_and_is_retried(db, db_url, capsys):
    add(db, good=0, bad=10)
    locker = psycopg2.connect(db_url)
    with locker.cursor() as cur:
        cur.execute("LOCK TABLE feedback IN ACCESS EXCLUSIVE MODE")
    release = threading.Timer(1.5, locker.commit)
    release.start()
    event = asyncio.run(first_event(trigger(statement_timeout_s=0.3), timeout=20))
    release.join()
    locker.close()
    assert any("QueryCanceled" in line for line in logs(capsys))
    assert event.payload["total"] == 10


def sensor(**kw) -> FeedbackThresholdSensor:
    args = dict(task_id="wait", persona_id=PERSONA, min_feedback=10, max_good_ratio=0.5, cooldown_hours=0, poke_interval=5)
    args.update(kw)
    return FeedbackThresholdSensor(**args)


def test_sensor_defers_to_the_trigger_with_its_thresholds():
    with pytest.raises(TaskDeferred) as info:
        sensor(timeout=600).execute({})
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout.total_seconds() == 600
    _, kwargs = deferred.trigger.serialize()
    assert (kwargs["persona_id"], kwargs["min_feedback"], kwargs["max_good_ratio"], kwargs["poll_interval"]) == (PERSONA, 10, 0.5, 5)
    assert kwargs["deadline"] == pytest.approx(time.time() + 600, abs=30)


def test_sensor_execute_complete_returns_the_window():
    event = {"status": "crossing", "persona_id": PERSONA, "from_id": 0, "to_id": 12, "total": 12, "good": 6, "reason": "r"}
    assert sensor().execute_complete({}, event) == event
    with pytest.raises(RuntimeError, match="unexpected event"):
        sensor().execute_complete({}, {"status": "error"})


@pytest.mark.parametrize(
    "soft_fail, expected",
    [pytest.param(True, AirflowSkipException, id="soft-fail-skips"), pytest.param(False, AirflowSensorTimeout, id="times-out")],
)
def test_quiet_window_ends_the_sensor(soft_fail, expected):
    quiet = {"status": "quiet", "persona_id": PERSONA}
    with pytest.raises(expected):
        sensor(soft_fail=soft_fail).resume_execution("execute_complete", {"event": quiet}, {})


def test_reschedule_fallback_pokes_the_same_rule(db):
    s = sensor(deferrable=False, mode="reschedule")
    add(db, good=5, bad=4)
    assert s.poke({}) is False
    add(db, good=0, bad=1)
    result = s.poke({})
    assert result.is_done and (result.xcom_value["total"], result.xcom_value["good"]) == (10, 5)


def test_poke_with_the_database_down_keeps_waiting(monkeypatch, capsys):
    monkeypatch.setenv(CONN_ENV, "postgresql://postgres@127.0.0.1:1/nowhere")
    assert sensor(deferrable=False, mode="reschedule").poke({}) is False
    assert any("unavailable while poking" in line for line in logs(capsys))


def test_bad_threshold_is_rejected_when_the_dag_is_built():
    with pytest.raises(ValueError, match="max_good_ratio"):
        sensor(max_good_ratio=1.5)
