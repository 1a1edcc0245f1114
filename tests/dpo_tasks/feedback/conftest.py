"""A throwaway database on the real local PostgreSQL, migrated once per test session."""

from __future__ import annotations

import os

import pytest

from dpo_tasks.feedback.db import create_database, drop_database, migrate

ADMIN_URL = os.environ.get("PERSONA_DPO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return ADMIN_URL


@pytest.fixture(scope="session")
def feedback_db_url():
    url = create_database(ADMIN_URL, prefix="test_feedback")
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        migrate(conn)
    finally:
        conn.close()
    yield url
    drop_database(ADMIN_URL, url)


@pytest.fixture
def db(feedback_db_url):
    """A psycopg2 connection to an emptied feedback database."""
    import psycopg2

    conn = psycopg2.connect(feedback_db_url)
    with conn.cursor() as cur:
        cur.execute("TRUNCATE feedback, feedback_watermarks, feedback_triggers RESTART IDENTITY")
    conn.commit()
    yield conn
    conn.close()


@pytest.fixture
def add_feedback(db):
    """add_feedback(persona_id, good, bad, prompt=...): insert that many good and bad ratings."""

    def add(persona_id: str, good: int, bad: int, *, prompt: str = "a spicy tofu dish") -> None:
        with db.cursor() as cur:
            cur.executemany(
                "INSERT INTO feedback (persona_id, prompt, response, rating) VALUES (%s, %s, %s, %s)",
                [(persona_id, prompt, f"good answer {i}", "good") for i in range(good)]
                + [(persona_id, prompt, f"bad answer {i}", "bad") for i in range(bad)],
            )
        db.commit()

    return add
