"""Feedback-test helpers; the throwaway database itself (`feedback_db_url`, `db`) is in tests/conftest.py."""

from __future__ import annotations

import pytest


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
