"""Load feedback from a JSONL or CSV file into the feedback database.

Each row needs `persona_id`, `prompt`, `response` and `rating` (good/bad;
also up/down, thumbs_up/thumbs_down, 1/0, true/false); `model_version`,
`comment`, `created_at` (ISO 8601) and `id` (the app's own id for the
rating) are optional. A bad row is reported with its line number and
skipped; the good rows are inserted in one transaction, so a crash half way
inserts nothing. Each row gets a `source_key` (the `id`, else a hash of its
content and how many identical rows came before it in the file), so loading
the same file again inserts nothing twice.

Usage:
    python -m dpo_tasks ingest-feedback feedback.jsonl [--db-url URL]
    python -m dpo_tasks ingest-feedback export.csv --dry-run
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from dpo_tasks.config import PERSONA_ID_RE, load_personas_lenient
from dpo_tasks.runs import Progress

log = logging.getLogger(__name__)

FIELDS = ("id", "persona_id", "model_version", "prompt", "response", "rating", "comment", "created_at")
REQUIRED = ("persona_id", "prompt", "response", "rating")
_RATINGS = {
    "good": "good", "up": "good", "thumbs_up": "good", "1": "good", "+1": "good", "true": "good",
    "bad": "bad", "down": "bad", "thumbs_down": "bad", "0": "bad", "-1": "bad", "false": "bad",
}
MAX_TEXT = 100_000
BATCH = 1000


@dataclass
class IngestReport:
    path: str
    rows: int = 0
    inserted: int = 0
    already_loaded: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "rows": self.rows, "inserted": self.inserted, "already_loaded": self.already_loaded,
            "bad_rows": len(self.errors), "errors": self.errors,
        }


def normalize_rating(value: Any) -> str:
    key = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
    if key not in _RATINGS:
        raise ValueError(f"field 'rating' = {value!r} is invalid: use good or bad (or up/down, 1/0)")
    return _RATINGS[key]


def validate_row(raw: Any, known_personas: set[str] | None) -> dict[str, Any]:
    """One input record -> the row to insert; ValueError naming the field and value otherwise."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected an object with fields {', '.join(REQUIRED)}, got {type(raw).__name__}")
    unknown = sorted(k for k in raw if k not in FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown!r}; allowed: {', '.join(FIELDS)}")
    for name in REQUIRED:
        value = raw.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(f"field {name!r} is required (got {value!r})")
    row: dict[str, Any] = {}
    pid = raw["persona_id"]
    if not isinstance(pid, str) or not PERSONA_ID_RE.fullmatch(pid):
        raise ValueError(f"field 'persona_id' = {pid!r} is invalid: must match {PERSONA_ID_RE.pattern}")
    if known_personas is not None and pid not in known_personas:
        raise ValueError(f"field 'persona_id' = {pid!r} is not a persona in personas.yaml")
    row["persona_id"] = pid
    for name in ("prompt", "response", "model_version", "comment"):
        value = raw.get(name)
        if value is None or value == "":
            row[name] = None
            continue
        if not isinstance(value, str):
            raise ValueError(f"field {name!r} = {value!r} must be a string")
        if len(value) > MAX_TEXT:
            raise ValueError(f"field {name!r} is {len(value)} characters long (limit {MAX_TEXT})")
        if "\x00" in value:
            raise ValueError(f"field {name!r} contains a NUL character")
        row[name] = value
    row["rating"] = normalize_rating(raw["rating"])
    created = raw.get("created_at")
    if created in (None, ""):
        row["created_at"] = None
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(created))
        except ValueError:
            raise ValueError(f"field 'created_at' = {created!r} is not an ISO 8601 time") from None
        # A time without a zone is taken as UTC rather than the server's zone.
        row["created_at"] = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    source_id = raw.get("id")
    if source_id not in (None, ""):
        if not isinstance(source_id, (str, int)) or isinstance(source_id, bool):
            raise ValueError(f"field 'id' = {source_id!r} must be a string or an integer")
        row["source_key"] = f"id:{source_id}"
    return row


def content_key(row: dict[str, Any]) -> str:
    fields = [row["persona_id"], row["model_version"], row["prompt"], row["response"], row["rating"], row["comment"],
              row["created_at"].isoformat() if row["created_at"] else None]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode("utf-8")).hexdigest()


def read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, raw record) for a .jsonl/.json-lines or .csv file; undecodable lines yield an exception."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            start = 2
            for record in reader:
                # A None key holds the cells beyond the header: a malformed line.
                if None in record:
                    yield start, ValueError(f"{len(record[None])} more cell(s) than the header has")
                else:
                    yield start, {k: v for k, v in record.items() if k is not None}
                start = reader.line_num + 1
        return
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, ValueError(f"not valid JSON: {exc.msg}")


INSERT_SQL = (
    "INSERT INTO feedback (persona_id, model_version, prompt, response, rating, comment, created_at, source_key)"
    " VALUES (%(persona_id)s, %(model_version)s, %(prompt)s, %(response)s, %(rating)s, %(comment)s,"
    " coalesce(%(created_at)s, now()), %(source_key)s)"
    " ON CONFLICT (source_key) DO NOTHING"
)


def ingest(conn: Any, path: str | Path, *, known_personas: set[str] | None = None, dry_run: bool = False) -> IngestReport:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"feedback file not found: {str(path)!r}")
    report = IngestReport(path=str(path))
    good: list[dict[str, Any]] = []
    seen: Counter[str] = Counter()
    for lineno, record in read_records(path):
        report.rows += 1
        try:
            if isinstance(record, Exception):
                raise record
            row = validate_row(record, known_personas)
        except ValueError as exc:
            report.errors.append(f"{path.name}:{lineno}: {exc}")
            continue
        if "source_key" not in row:
            key = content_key(row)
            # Two identical ratings in one file are two ratings; the same file loaded twice is not.
            row["source_key"] = f"sha256:{key}:{seen[key]}"
            seen[key] += 1
        good.append(row)
    for err in report.errors:
        log.warning("skipping bad row %s", err)
    if dry_run or not good:
        return report
    progress = Progress(f"ingest {path.name}", len(good), unit="rows")
    inserted = 0
    try:
        with conn.cursor() as cur:
            for i in range(0, len(good), BATCH):
                batch = good[i : i + BATCH]
                cur.executemany(INSERT_SQL, batch)
                inserted += max(cur.rowcount, 0)
                progress.advance(len(batch))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    report.inserted = inserted
    report.already_loaded = len(good) - inserted
    return report


def make_parser(command: str) -> argparse.ArgumentParser:
    from dpo_tasks.feedback.db import add_db_args

    parser = argparse.ArgumentParser(description="Load feedback rows from JSONL or CSV; bad rows are reported and skipped.")
    parser.add_argument("file", help="a .jsonl or .csv file")
    parser.add_argument("--personas-file", default=None, help="personas.yaml path (persona ids are checked against it)")
    parser.add_argument("--any-persona", action="store_true", help="accept persona ids that are not in personas.yaml")
    parser.add_argument("--dry-run", action="store_true", help="validate only, insert nothing")
    add_db_args(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    from dpo_tasks.feedback.db import connect_for_cli

    known = None if args.any_persona else set(load_personas_lenient(args.personas_file).personas)
    conn = None if args.dry_run else connect_for_cli(args.db_url)
    try:
        report = ingest(conn, args.file, known_personas=known, dry_run=args.dry_run)
    finally:
        if conn is not None:
            conn.close()
    for err in report.errors:
        print(f"bad row {err}", file=sys.stderr)
    if args.dry_run:
        print(f"{args.file}: {report.rows} rows, {report.rows - len(report.errors)} valid, {len(report.errors)} bad")
    else:
        print(f"{args.file}: {report.rows} rows, {report.inserted} inserted, {report.already_loaded} already loaded, {len(report.errors)} bad")
    return 1 if report.errors else 0
