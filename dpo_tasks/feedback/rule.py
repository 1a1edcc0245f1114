"""The retrain rule and the one-run-per-crossing claim.

A persona is retrained when, over its feedback newer than its watermark
(the last feedback id a triggered run consumed):

    total >= min_feedback  and  good / total <= max_good_ratio

and at least `cooldown_hours` have passed since its last trigger. The
thresholds are `feedback.*` in personas.yaml (defaults 50, 0.6, 24 h).

Polling (`poll_window`) only reads. Acting on a crossing goes through
`claim_crossing`, which locks the persona's watermark row, re-evaluates the
rule on what is committed now, and in the same transaction moves the
watermark past the window and records the claim: two monitors racing, a
retried task or a restarted scheduler all see the moved watermark and do not
claim the same feedback twice.

Usage:
    python -m dpo_tasks feedback-status [--persona ID ...] [--db-url URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any

from dpo_tasks.config import FeedbackConfig, load_personas_lenient

# One statement, so every number comes from one snapshot: never a total from
# before a commit and a good count from after it. Whole blocks of 1024 ids
# above the watermark's block are summed from `feedback_rollup` (migration
# 002); only the rest of the watermark's own block is counted row by row, so a
# poll stays cheap however much feedback waits.
WINDOW_SQL = """
WITH w AS (
    SELECT coalesce(max(last_feedback_id), 0) AS last_id, max(last_trigger_at) AS last_trigger_at
    FROM feedback_watermarks WHERE persona_id = %(persona_id)s
), head AS (
    SELECT count(*) AS total, count(*) FILTER (WHERE f.rating = 'good') AS good
    FROM w JOIN feedback AS f
      ON f.persona_id = %(persona_id)s AND f.id > w.last_id AND f.id < (w.last_id / 1024 + 1) * 1024
), tail AS (
    SELECT coalesce(sum(r.total), 0) AS total, coalesce(sum(r.good), 0) AS good
    FROM w JOIN feedback_rollup AS r ON r.persona_id = %(persona_id)s AND r.block > w.last_id / 1024
), newest AS (
    SELECT max(id) AS id FROM feedback WHERE persona_id = %(persona_id)s
)
SELECT w.last_id, w.last_trigger_at, now(), head.total + tail.total, head.good + tail.good,
       greatest(w.last_id, coalesce(newest.id, 0))
FROM w, head, tail, newest
"""


@dataclass(frozen=True)
class Window:
    """A persona's feedback above its watermark: ids (from_id, to_id], counts, and the trigger history."""

    persona_id: str
    from_id: int
    to_id: int
    total: int
    good: int
    last_trigger_at: dt.datetime | None
    db_now: dt.datetime

    @property
    def good_ratio(self) -> float | None:
        return self.good / self.total if self.total else None


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reason: str


def decide(window: Window, rule: FeedbackConfig) -> Decision:
    """The retrain rule; `reason` says which condition held or failed, with the numbers."""
    if window.total < rule.min_feedback:
        return Decision(False, f"{window.total} new feedback < min_feedback {rule.min_feedback}")
    # good/total <= ratio without dividing; the tolerance keeps 30/50 at 0.6 "at the ratio"
    # although 0.6 * 50 is not exactly 30 in binary floating point.
    if window.good > rule.max_good_ratio * window.total + 1e-9:
        return Decision(
            False, f"good ratio {window.good}/{window.total} = {window.good_ratio:.3f} > max_good_ratio {rule.max_good_ratio}"
        )
    if window.last_trigger_at is not None:
        ready_at = window.last_trigger_at + dt.timedelta(hours=rule.cooldown_hours)
        if window.db_now < ready_at:
            return Decision(False, f"cooldown: last trigger {window.last_trigger_at.isoformat()}, next allowed {ready_at.isoformat()}")
    return Decision(
        True,
        f"{window.good}/{window.total} good ({window.good_ratio:.3f} <= {rule.max_good_ratio}) "
        f"over {window.total} >= {rule.min_feedback} new feedback",
    )


def window_from_row(persona_id: str, row: tuple) -> Window:
    last_id, last_trigger_at, db_now, total, good, to_id = row
    return Window(persona_id, int(last_id), int(to_id), int(total), int(good), last_trigger_at, db_now)


def poll_window(conn: Any, persona_id: str) -> Window:
    """Read-only: the persona's current window. Ends the transaction it opened."""
    try:
        with conn.cursor() as cur:
            cur.execute(WINDOW_SQL, {"persona_id": persona_id})
            row = cur.fetchone()
    finally:
        conn.rollback()
    return window_from_row(persona_id, row)


@dataclass(frozen=True)
class Claim:
    """A crossing this caller owns: the feedback window its training run consumes."""

    persona_id: str
    claim_key: str
    from_id: int
    to_id: int
    total: int
    good: int
    triggered_at: str

    @property
    def run_id(self) -> str:
        # Deterministic, so triggering the same claim twice hits "already exists".
        return f"feedback__{self.persona_id}__{self.from_id}-{self.to_id}"

    def conf(self) -> dict[str, Any]:
        """The run conf the persona DAG receives (key `feedback`)."""
        return {"feedback": asdict(self)}


def _claim_from_row(row: tuple) -> Claim:
    persona_id, claim_key, from_id, to_id, total, good, triggered_at = row
    return Claim(persona_id, claim_key, int(from_id), int(to_id), int(total), int(good), triggered_at.isoformat())


def claim_crossing(conn: Any, persona_id: str, rule: FeedbackConfig, *, claim_key: str) -> tuple[Claim | None, Decision]:
    """Claim the persona's current crossing, if there is one, in one transaction.

    Returns `(claim, decision)`; `claim` is None when the rule does not hold
    (anymore). Calling again with the same `claim_key` (a retried task)
    returns the earlier claim instead of claiming new feedback.
    """
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO feedback_watermarks (persona_id) VALUES (%s) ON CONFLICT (persona_id) DO NOTHING",
                (persona_id,),
            )
            cur.execute("SELECT 1 FROM feedback_watermarks WHERE persona_id = %s FOR UPDATE", (persona_id,))
            # Ids are handed out at insert time but become visible at commit, so an
            # insert still in flight may hold an id below the newest visible one. SHARE
            # mode waits for those writers and holds new ones back until this commit,
            # so no rating can land below the new watermark unseen.
            cur.execute("LOCK TABLE feedback IN SHARE MODE")
            cur.execute(
                "SELECT persona_id, claim_key, from_id, to_id, total, good, triggered_at"
                " FROM feedback_triggers WHERE claim_key = %s",
                (claim_key,),
            )
            earlier = cur.fetchone()
            if earlier is not None:
                conn.rollback()
                claim = _claim_from_row(earlier)
                if claim.persona_id != persona_id:
                    raise ValueError(f"claim_key {claim_key!r} belongs to persona {claim.persona_id!r}, not {persona_id!r}")
                return claim, Decision(True, f"already claimed by {claim_key!r}")
            cur.execute(WINDOW_SQL, {"persona_id": persona_id})
            window = window_from_row(persona_id, cur.fetchone())
            decision = decide(window, rule)
            if not decision.retrain:
                conn.rollback()
                return None, decision
            cur.execute(
                "UPDATE feedback_watermarks SET last_feedback_id = %s, last_trigger_at = now(), updated_at = now()"
                " WHERE persona_id = %s",
                (window.to_id, persona_id),
            )
            cur.execute(
                "INSERT INTO feedback_triggers (persona_id, claim_key, from_id, to_id, total, good)"
                " VALUES (%s, %s, %s, %s, %s, %s)"
                " RETURNING persona_id, claim_key, from_id, to_id, total, good, triggered_at",
                (persona_id, claim_key, window.from_id, window.to_id, window.total, window.good),
            )
            claim = _claim_from_row(cur.fetchone())
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return claim, decision


def status(conn: Any, personas: dict[str, FeedbackConfig]) -> list[dict[str, Any]]:
    """Every persona's window and what the rule says about it, read-only."""
    rows = []
    for persona_id, rule in personas.items():
        window = poll_window(conn, persona_id)
        decision = decide(window, rule)
        rows.append({
            "persona_id": persona_id,
            "watermark": window.from_id,
            "new_feedback": window.total,
            "good": window.good,
            "good_ratio": None if window.good_ratio is None else round(window.good_ratio, 4),
            "last_trigger_at": window.last_trigger_at.isoformat() if window.last_trigger_at else None,
            "retrain": decision.retrain,
            "reason": decision.reason,
        })
    return rows


def make_parser(command: str) -> argparse.ArgumentParser:
    from dpo_tasks.feedback.db import add_db_args

    parser = argparse.ArgumentParser(description="Show each persona's new feedback and whether the retrain rule holds (read-only).")
    parser.add_argument("--persona", action="append", default=[], help="persona id (repeatable; default: every persona)")
    parser.add_argument("--personas-file", default=None, help="personas.yaml path")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_db_args(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    from dpo_tasks.feedback.db import connect_for_cli

    personas = load_personas_lenient(args.personas_file)
    ids = args.persona or sorted(personas.personas)
    rules = {pid: personas.get(pid).config.feedback for pid in ids}
    conn = connect_for_cli(args.db_url)
    try:
        rows = status(conn, rules)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        ratio = "-" if r["good_ratio"] is None else f"{r['good_ratio']:.2f}"
        verdict = "RETRAIN" if r["retrain"] else "ok"
        print(f"{r['persona_id']:<32} new={r['new_feedback']:<7} good={ratio:<5} {verdict:<8} {r['reason']}")
    return 0
