"""Load feedback from a JSONL or CSV file into the feedback database, losing nothing.

Each row needs `persona_id`, `prompt`, `response` and `rating` (good/bad;
also up/down, thumbs_up/thumbs_down, 1/0, true/false); `model_version`,
`comment`, `created_at` (ISO 8601) and `id` (the app's own id for the
rating) are optional.

- Rows are read, decoded and checked one at a time: a line that is not UTF-8,
  not JSON, has a field over the text limit or an unterminated CSV quote is
  reported with its line and skipped; the rest load. (An unterminated quote
  would otherwise swallow the rest of the file into one cell: a quoted record
  longer than `MAX_RECORD_LINES` lines or `MAX_RECORD_BYTES` is reported at
  the line where it starts, and reading resumes on the next line.)
- Rows are streamed to PostgreSQL in batches (COPY into a temporary table, then
  one INSERT ... SELECT per batch), so memory stays flat however long the file
  is; the whole file is one transaction, so a crash inserts nothing.
- Each row gets a `source_key` that never merges two real ratings: `id:<id>`
  when the row has an id, else `line:<file name>:<line>:<content digest>`.
  Loading the same file again, or the same file with rows appended, inserts
  only what is new; identical ratings in another file, or on other lines, are
  other ratings.
- A row whose key is already stored with the same content is counted as
  already loaded; with different content (another rating for the same id) it
  is reported as a conflict and the stored row is left as it is.

Usage:
    python -m dpo_tasks ingest-feedback feedback.jsonl [--db-url URL]
    python -m dpo_tasks ingest-feedback export.csv --dry-run
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import json
import logging
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from dpo_tasks.config import PERSONA_ID_RE, load_personas_lenient
from dpo_tasks.loaders import InputFileError, brief, check_regular_file, iter_jsonl

log = logging.getLogger(__name__)

FIELDS = ("id", "persona_id", "model_version", "prompt", "response", "rating", "comment", "created_at")
REQUIRED = ("persona_id", "prompt", "response", "rating")
_RATINGS = {
    "good": "good", "up": "good", "thumbs_up": "good", "1": "good", "+1": "good", "true": "good",
    "bad": "bad", "down": "bad", "thumbs_down": "bad", "0": "bad", "-1": "bad", "false": "bad",
}
MAX_TEXT = 100_000
# source_key is indexed; a btree entry must stay well under a page.
MAX_ID = 256
BATCH = 5000
# A quoted CSV record longer than this is an unterminated quote, not a cell (a cell is at most MAX_TEXT characters).
MAX_RECORD_LINES = 2000
MAX_RECORD_BYTES = 8 * MAX_TEXT
# Error messages kept in the report (all are logged and counted).
MAX_REPORTED = 1000


@dataclass
class IngestReport:
    path: str
    rows: int = 0
    valid: int = 0
    inserted: int = 0
    already_loaded: int = 0
    bad_rows: int = 0
    conflicts: int = 0
    errors: list[str] = field(default_factory=list)

    def problem(self, message: str) -> None:
        log.warning("%s", message)
        if len(self.errors) < MAX_REPORTED:
            self.errors.append(message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "rows": self.rows, "valid": self.valid, "inserted": self.inserted,
            "already_loaded": self.already_loaded, "conflicts": self.conflicts, "bad_rows": self.bad_rows,
            "errors": self.errors,
        }


def normalize_rating(value: Any) -> str:
    key = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
    if key not in _RATINGS:
        raise ValueError(f"field 'rating' = {brief(value)} is invalid: use good or bad (or up/down, 1/0)")
    return _RATINGS[key]


def validate_row(raw: Any, known_personas: set[str] | None) -> dict[str, Any]:
    """One input record -> the row to insert; ValueError naming the field and value otherwise."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected an object with fields {', '.join(REQUIRED)}, got {type(raw).__name__}")
    unknown = sorted(k for k in raw if k not in FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {brief(unknown)}; allowed: {', '.join(FIELDS)}")
    for name in REQUIRED:
        value = raw.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(f"field {name!r} is required (got {brief(value)})")
    row: dict[str, Any] = {}
    pid = raw["persona_id"]
    if not isinstance(pid, str) or not PERSONA_ID_RE.fullmatch(pid):
        raise ValueError(f"field 'persona_id' = {brief(pid)} is invalid: must match {PERSONA_ID_RE.pattern}")
    if known_personas is not None and pid not in known_personas:
        raise ValueError(f"field 'persona_id' = {brief(pid)} is not a persona in personas.yaml")
    row["persona_id"] = pid
    for name in ("prompt", "response", "model_version", "comment"):
        value = raw.get(name)
        if value is None or value == "":
            row[name] = None
            continue
        if not isinstance(value, str):
            raise ValueError(f"field {name!r} = {brief(value)} must be a string")
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
            raise ValueError(f"field 'created_at' = {brief(created)} is not an ISO 8601 time") from None
        # A time without a zone is taken as UTC rather than the server's zone.
        row["created_at"] = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    source_id = raw.get("id")
    if source_id not in (None, ""):
        if not isinstance(source_id, (str, int)) or isinstance(source_id, bool):
            raise ValueError(f"field 'id' = {brief(source_id)} must be a string or an integer")
        if len(str(source_id)) > MAX_ID or not str(source_id).isprintable():
            raise ValueError(f"field 'id' = {brief(source_id)} must be printable and at most {MAX_ID} characters")
        row["source_key"] = f"id:{source_id}"
    return row


def content_digest(row: dict[str, Any]) -> str:
    """What a rating says (persona, model, prompt, response, rating, comment, time), hashed."""
    fields = [row["persona_id"], row["model_version"], row["prompt"], row["response"], row["rating"], row["comment"],
              row["created_at"].isoformat() if row["created_at"] else None]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode("utf-8")).hexdigest()


class _RecordTooLong(Exception):
    pass


class _Lines:
    """Physical lines of a CSV file, decoded one by one, remembering the lines of the record being read.

    Undecodable bytes become lone surrogates (`surrogateescape`) so the csv module keeps going;
    the record that holds them is then reported. Lines handed back with `replay` are read again
    (after an unterminated quote, the lines it swallowed).
    """

    def __init__(self, fh: Any):
        self._fh = fh
        self.lineno = 0
        self._replay: deque[tuple[int, str]] = deque()
        self.record: list[tuple[int, str]] = []
        self._record_bytes = 0

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        if self._replay:
            lineno, text = self._replay.popleft()
        else:
            raw = self._fh.readline(MAX_RECORD_BYTES + 1)
            if not raw:
                raise StopIteration
            if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):
                    raw = self._fh.readline(1 << 20)
                self.lineno += 1
                self.record.append((self.lineno, ""))
                raise _RecordTooLong()
            self.lineno += 1
            if self.lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            lineno, text = self.lineno, raw.decode("utf-8", "surrogateescape")
        self.record.append((lineno, text))
        self._record_bytes += len(text)
        if len(self.record) > MAX_RECORD_LINES or self._record_bytes > MAX_RECORD_BYTES:
            raise _RecordTooLong()
        return text

    def start_record(self) -> None:
        self.record, self._record_bytes = [], 0

    def replay(self, lines: list[tuple[int, str]]) -> None:
        self._replay.extendleft(reversed(lines))


def _has_undecodable(cells: list[str]) -> bool:
    try:
        for cell in cells:
            cell.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _csv_records(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as fh:
        lines = _Lines(fh)
        header: list[str] | None = None
        while True:
            reader = csv.reader(lines, strict=True)
            restart = False
            while not restart:
                lines.start_record()
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except (csv.Error, _RecordTooLong) as exc:
                    record = lines.record
                    start = record[0][0] if record else lines.lineno
                    if isinstance(exc, _RecordTooLong) or "unexpected end of data" in str(exc):
                        yield start, ValueError(
                            "unterminated quoted field (or a record over "
                            f"{MAX_RECORD_LINES} lines / {MAX_RECORD_BYTES} bytes) starts here; "
                            "the lines after it are read as rows of their own"
                        )
                        lines.replay(record[1:])
                        # The reader may be mid-quote: start a fresh one.
                        restart = True
                        continue
                    if "field larger than field limit" in str(exc):
                        yield start, ValueError(f"a field is longer than {csv.field_size_limit()} characters (limit {MAX_TEXT})")
                    else:
                        yield start, ValueError(f"malformed CSV: {exc}")
                    continue
                start = lines.record[0][0] if lines.record else lines.lineno
                if not cells or cells == [""]:
                    continue
                if _has_undecodable(cells):
                    yield start, ValueError("not UTF-8: the record holds bytes that cannot be decoded (save the file as UTF-8)")
                    continue
                if header is None:
                    header = [c.strip() for c in cells]
                    continue
                if len(cells) > len(header):
                    yield start, ValueError(f"{len(cells) - len(header)} more cell(s) than the header has")
                    continue
                yield start, dict(zip(header, cells))


def read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, raw record or ValueError) for a JSONL or CSV file, streamed."""
    if path.suffix.lower() == ".csv":
        return _csv_records(path)
    # Streamed: an export of any size is fine.
    return iter_jsonl(path, what="feedback file", max_bytes=None)


# Staged per batch, then inserted with one statement; the temporary tables live as long as the transaction.
STAGE_SQL = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS feedback_ingest_stage ("
    " line BIGINT, persona_id TEXT, model_version TEXT, prompt TEXT, response TEXT, rating TEXT, comment TEXT,"
    " created_at TIMESTAMPTZ, source_key TEXT, source_digest TEXT) ON COMMIT DROP;"
    " CREATE TEMPORARY TABLE IF NOT EXISTS feedback_ingest_new (source_key TEXT PRIMARY KEY) ON COMMIT DROP"
)
COPY_SQL = (
    "COPY feedback_ingest_stage (line, persona_id, model_version, prompt, response, rating, comment, created_at,"
    " source_key, source_digest) FROM STDIN"
)
# The first line of each key in the batch is the candidate; ON CONFLICT leaves stored rows alone.
INSERT_SQL = (
    "WITH inserted AS ("
    " INSERT INTO feedback (persona_id, model_version, prompt, response, rating, comment, created_at, source_key, source_digest)"
    " SELECT persona_id, model_version, prompt, response, rating, comment, coalesce(created_at, now()), source_key, source_digest"
    " FROM (SELECT DISTINCT ON (source_key) * FROM feedback_ingest_stage ORDER BY source_key, line) first_lines"
    " ORDER BY line"
    " ON CONFLICT (source_key) DO NOTHING RETURNING source_key)"
    " INSERT INTO feedback_ingest_new SELECT source_key FROM inserted"
)
# Every staged line that did not become a row: same content as the stored row, or a conflict.
NOT_INSERTED_SQL = (
    "SELECT s.line, s.source_key, f.source_digest IS NULL OR f.source_digest = s.source_digest, f.rating, f.id"
    " FROM (SELECT line, source_key, source_digest, row_number() OVER (PARTITION BY source_key ORDER BY line) AS nth"
    "       FROM feedback_ingest_stage) s"
    " JOIN feedback f ON f.source_key = s.source_key"
    " WHERE s.nth > 1 OR NOT EXISTS (SELECT 1 FROM feedback_ingest_new n WHERE n.source_key = s.source_key)"
    " ORDER BY s.line"
)


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _flush(cur: Any, batch: list[dict[str, Any]], report: IngestReport, name: str) -> None:
    cols = ("line", "persona_id", "model_version", "prompt", "response", "rating", "comment", "created_at",
            "source_key", "source_digest")
    text = "".join("\t".join(_copy_text(row[c]) for c in cols) + "\n" for row in batch)
    cur.execute("TRUNCATE feedback_ingest_stage, feedback_ingest_new")
    cur.copy_expert(COPY_SQL, io.StringIO(text))
    cur.execute("ANALYZE feedback_ingest_stage")
    cur.execute(INSERT_SQL)
    report.inserted += max(cur.rowcount, 0)
    cur.execute(NOT_INSERTED_SQL)
    for line, key, same, rating, row_id in cur.fetchall():
        if same:
            report.already_loaded += 1
        else:
            report.conflicts += 1
            report.problem(
                f"{name}:{line}: conflicts with stored feedback row {row_id} ({brief(key)}, rating {rating!r}): "
                "same id, different rating or text; the stored row is kept, this line is not loaded"
            )


def ingest(conn: Any, path: str | Path, *, known_personas: set[str] | None = None, dry_run: bool = False) -> IngestReport:
    path = check_regular_file(path, what="feedback file")
    report = IngestReport(path=str(path))
    batch: list[dict[str, Any]] = []
    cur = None
    try:
        if not dry_run:
            cur = conn.cursor()
            cur.execute(STAGE_SQL)
        for lineno, record in read_records(path):
            report.rows += 1
            try:
                if isinstance(record, Exception):
                    raise record
                row = validate_row(record, known_personas)
            except ValueError as exc:
                report.bad_rows += 1
                report.problem(f"{path.name}:{lineno}: {exc}")
                continue
            report.valid += 1
            row["line"] = lineno
            row["source_digest"] = content_digest(row)
            # Without an id, the file and line tell ratings apart: identical ratings elsewhere are other ratings.
            row.setdefault("source_key", f"line:{path.name}:{lineno}:{row['source_digest']}")
            if cur is None:
                continue
            batch.append(row)
            if len(batch) >= BATCH:
                _flush(cur, batch, report, path.name)
                batch = []
                if report.valid % (20 * BATCH) == 0:
                    log.info("ingest %s: %d rows read, %d inserted", path.name, report.rows, report.inserted)
        if cur is not None:
            if batch:
                _flush(cur, batch, report, path.name)
            cur.close()
            conn.commit()
    except BaseException:
        if conn is not None and not dry_run:
            conn.rollback()
        raise
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
    if len(report.errors) < report.bad_rows + report.conflicts:
        print(f"... {report.bad_rows + report.conflicts - len(report.errors)} more (see the log)", file=sys.stderr)
    if args.dry_run:
        print(f"{args.file}: {report.rows} rows, {report.valid} valid, {report.bad_rows} bad")
    else:
        print(f"{args.file}: {report.rows} rows, {report.inserted} inserted, {report.already_loaded} already loaded, "
              f"{report.bad_rows} bad, {report.conflicts} conflicting")
    return 1 if report.bad_rows or report.conflicts else 0
