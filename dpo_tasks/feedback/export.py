"""Feedback window -> training signal in the run directory.

For the feedback ids in (from_id, to_id] of one persona:

- `feedback_pairs.jsonl`: for every prompt rated both ways, preference pairs
  with a good response as chosen and a bad one as rejected (every response is
  used at least once; a response rated both good and bad is contradictory and
  left out). `source: "feedback"`; label appends them to the judged pairs.
- `feedback_prompts.jsonl`: each distinct prompt that got bad feedback; the
  generate stage puts them first in the run's sample.

Prompts are grouped ignoring case and runs of whitespace, so the app's
"Spicy  tofu?" and "spicy tofu?" are one prompt.

Personal data in prompts and responses (e-mail addresses, phone numbers, card
numbers, IBANs, street addresses, ...) is replaced by its kind (`<EMAIL_ADDRESS>`)
before anything is grouped or written (`dpo_tasks.feedback.pii`, Presidio's
pattern recognizers); the summary counts what was scrubbed (`pii_scrubbed`).

A prompt too close to one of the persona's evaluation cases (a near-duplicate by
dpo_tasks.textsim, the measure the shipped data is held out by) is dropped with
all its ratings: training on it would let the adapter learn the test. The
summary counts them (`held_out_prompts`, `held_out_rows`).

Usage:
    python -m dpo_tasks feedback-export --persona ID --run-dir DIR --from-id 0 --to-id 1234 [--db-url URL]
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections import Counter
from itertools import cycle
from typing import Any

from dpo_tasks.config import Persona
from dpo_tasks.runs import RunDir, write_json, write_jsonl
from dpo_tasks.textsim import Index

log = logging.getLogger(__name__)

STAGE = "feedback_export"
SELECT_SQL = (
    "SELECT id, prompt, response, rating, model_version FROM feedback"
    " WHERE persona_id = %s AND id > %s AND id <= %s ORDER BY id"
)


def _prompt_key(prompt: str) -> str:
    return re.sub(r"\s+", " ", prompt).strip().casefold()


def eval_index(persona_id: str) -> Index:
    """The persona's evaluation cases, to hold feedback prompts out of them."""
    from dpo_tasks.prompts import load_eval_cases

    return Index((case["id"], case["prompt"]) for case in load_eval_cases(persona_id))


def build_signal(
    rows: list[tuple], held_out: Index | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """(id, prompt, response, rating, model_version) rows -> (pairs, bad prompts, counts).

    Prompts that near-duplicate a text in `held_out` are left out, rows and all.
    """
    groups: dict[str, dict[str, Any]] = {}
    for fid, prompt, response, rating, model_version in rows:
        group = groups.setdefault(
            _prompt_key(prompt), {"prompt": prompt.strip(), "good": {}, "bad": {}, "first_bad": None, "rows": 0}
        )
        group["rows"] += 1
        # Same response text rated twice the same way: one response.
        group[rating].setdefault(response.strip(), (fid, model_version))
        if rating == "bad" and group["first_bad"] is None:
            group["first_bad"] = fid
    held_out_prompts = held_out_rows = 0
    if held_out is not None and len(held_out):
        for key in list(groups):
            matches = held_out.matches(groups[key]["prompt"])
            if matches:
                log.info("feedback prompt %r dropped: too close to evaluation case %s", groups[key]["prompt"][:80], matches[0][0])
                held_out_prompts += 1
                held_out_rows += groups.pop(key)["rows"]
    pairs: list[dict[str, Any]] = []
    prompts: list[dict[str, Any]] = []
    contradictory = 0
    for group in groups.values():
        if group["first_bad"] is not None:
            prompts.append({"id": f"fb-{group['first_bad']}", "prompt": group["prompt"], "source": "feedback"})
        both = set(group["good"]) & set(group["bad"])
        contradictory += len(both)
        goods = [(text, meta) for text, meta in group["good"].items() if text not in both]
        bads = [(text, meta) for text, meta in group["bad"].items() if text not in both]
        if not goods or not bads:
            continue
        # Pair the longer side one-to-one with the shorter side cycled, so every response is used.
        if len(goods) >= len(bads):
            matched = zip(goods, cycle(bads))
        else:
            matched = ((g, b) for b, g in zip(bads, cycle(goods)))
        for (good_text, (good_id, good_mv)), (bad_text, (bad_id, bad_mv)) in matched:
            pairs.append({
                "id": f"fb-{good_id}-{bad_id}",
                "prompt": group["prompt"],
                "chosen": good_text,
                "rejected": bad_text,
                "source": "feedback",
                "feedback_ids": [good_id, bad_id],
                "model_versions": [good_mv, bad_mv],
            })
    counts = {
        "feedback_rows": len(rows),
        "prompts": len(groups),
        "pairs": len(pairs),
        "bad_prompts": len(prompts),
        "contradictory_responses": contradictory,
        "held_out_prompts": held_out_prompts,
        "held_out_rows": held_out_rows,
    }
    return pairs, prompts, counts


def scrub_rows(rows: list[tuple]) -> tuple[list[tuple], Counter[str]]:
    """Personal data (e-mails, phones, cards, addresses, ...) out of prompts and responses (dpo_tasks.feedback.pii)."""
    from dpo_tasks.feedback.pii import scrub

    total: Counter[str] = Counter()
    out = []
    for fid, prompt, response, rating, model_version in rows:
        prompt, found_p = scrub(prompt)
        response, found_r = scrub(response)
        total += found_p + found_r
        out.append((fid, prompt, response, rating, model_version))
    if total:
        log.info("feedback: scrubbed personal data before export: %s", ", ".join(f"{k} {v}" for k, v in sorted(total.items())))
    return out, total


def export(conn: Any, persona_id: str, run_dir: str, from_id: int, to_id: int) -> dict[str, Any]:
    """Write the two files for the window (from_id, to_id] and the stage summary; return the summary."""
    if from_id < 0 or to_id < from_id:
        raise ValueError(f"feedback window from_id={from_id!r} to_id={to_id!r}: need 0 <= from_id <= to_id")
    rd = RunDir(run_dir).ensure()
    try:
        with conn.cursor() as cur:
            cur.execute(SELECT_SQL, (persona_id, from_id, to_id))
            rows = cur.fetchall()
    finally:
        conn.rollback()
    rows, pii = scrub_rows(rows)
    pairs, prompts, counts = build_signal(rows, eval_index(persona_id))
    counts["pii_scrubbed"] = dict(sorted(pii.items()))
    write_jsonl(rd.feedback_pairs, pairs)
    write_jsonl(rd.feedback_prompts, prompts)
    summary = {
        "stage": STAGE,
        "persona_id": persona_id,
        "from_id": from_id,
        "to_id": to_id,
        **counts,
        "feedback_pairs": str(rd.feedback_pairs),
        "feedback_prompts": str(rd.feedback_prompts),
    }
    write_json(rd.stage_summary(STAGE), summary)
    log.info(
        "feedback %s (%d, %d]: %d rows -> %d pairs, %d prompts with bad feedback; %d prompts (%d rows) dropped as too close to an evaluation case",
        persona_id, from_id, to_id, counts["feedback_rows"], counts["pairs"], counts["bad_prompts"],
        counts["held_out_prompts"], counts["held_out_rows"],
    )
    return summary


def run(persona: Persona, run_dir: str, *, window: dict[str, Any] | None, db_url: str | None = None) -> dict[str, Any]:
    """Stage entry point. `window` is the `feedback` entry of a run conf ({from_id, to_id, ...}) or None.

    Without a window (a scheduled or manual run), nothing is exported and the
    summary says so: only a feedback-triggered run consumes feedback.
    """
    from dpo_tasks.feedback.db import connect

    if not window:
        summary = {"stage": STAGE, "persona_id": persona.id, "skipped": "no feedback window in this run"}
        write_json(RunDir(run_dir).stage_summary(STAGE), summary)
        return summary
    if window.get("persona_id", persona.id) != persona.id:
        raise ValueError(f"feedback window is for persona {window['persona_id']!r}, this run is {persona.id!r}")
    try:
        from_id, to_id = int(window["from_id"]), int(window["to_id"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"feedback window {window!r} needs integer from_id and to_id") from None
    conn = connect(db_url)
    try:
        return export(conn, persona.id, run_dir, from_id, to_id)
    finally:
        conn.close()


def make_parser(command: str) -> argparse.ArgumentParser:
    from dpo_tasks.cli import add_persona_args
    from dpo_tasks.feedback.db import add_db_args

    parser = argparse.ArgumentParser(description="Write feedback_pairs.jsonl and feedback_prompts.jsonl for a feedback window.")
    add_persona_args(parser)
    parser.add_argument("--from-id", type=int, required=True, help="window start, exclusive (the watermark before the trigger)")
    parser.add_argument("--to-id", type=int, required=True, help="window end, inclusive")
    add_db_args(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    from dpo_tasks.cli import persona_from_args
    from dpo_tasks.feedback.db import FeedbackDBError

    persona = persona_from_args(args)
    try:
        summary = run(persona, args.run_dir, window={"from_id": args.from_id, "to_id": args.to_id}, db_url=args.db_url)
    except (FeedbackDBError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{summary['pairs']} feedback pairs, {summary['bad_prompts']} feedback prompts -> {args.run_dir}"
        f" ({summary['held_out_prompts']} prompts too close to an evaluation case dropped)"
    )
    return 0
