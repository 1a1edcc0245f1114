"""Connections to the feedback database and the migrations runner.

Inside Airflow the database is the connection `feedback_db` (the postgres
provider's `PostgresHook`, which picks psycopg 3 or psycopg2); on the CLI it
is a plain libpq URL in `FEEDBACK_DB_URL` (psycopg2). Everything here uses
only the DB-API surface both drivers share, with `%s` parameters.

Migrations are the numbered files in `dpo_tasks/sql/` (`NNN_name.sql`),
applied in order, each in its own transaction, and recorded in
`schema_migrations` with a checksum. Applying them again is a no-op; a file
edited after it was applied is an error (write a new migration instead).

Usage:
    FEEDBACK_DB_URL=postgresql://postgres@127.0.0.1:5432/feedback python -m dpo_tasks db-migrate
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dpo_tasks.redact import redact

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "feedback_db"
URL_ENV = "FEEDBACK_DB_URL"
SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_MIGRATION_RE = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same for every migrator.
_MIGRATION_LOCK = 0x5045_5253_4F4E_4101


class FeedbackDBError(RuntimeError):
    """The feedback database is missing, unreachable or not in the expected shape."""


def connect(url: str | None = None, *, conn_id: str | None = None) -> Any:
    """A DB-API connection to the feedback database.

    `url` (psycopg2), else the Airflow connection `conn_id` when one is named
    (PostgresHook), else `$FEEDBACK_DB_URL`, else the Airflow connection `feedback_db`.
    """
    url = url or (None if conn_id else os.environ.get(URL_ENV))
    if url:
        import psycopg2

        try:
            return psycopg2.connect(url)
        except psycopg2.OperationalError as exc:
            # libpq may echo the DSN (key=value form included) in its message: both go through redact().
            raise FeedbackDBError(redact(f"cannot connect to the feedback database {url!r}: {str(exc).strip()}")) from None
    try:
        from airflow.providers.postgres.hooks.postgres import PostgresHook
    except ImportError:
        raise FeedbackDBError(
            f"no feedback database configured: set {URL_ENV} (a postgresql:// URL) or pass --db-url"
        ) from None
    import psycopg2

    try:
        return PostgresHook(postgres_conn_id=conn_id or DEFAULT_CONN_ID).get_conn()
    except psycopg2.OperationalError as exc:
        raise FeedbackDBError(redact(f"cannot connect to the feedback database (connection {conn_id or DEFAULT_CONN_ID!r}): {str(exc).strip()}")) from None


def connect_for_cli(url: str | None) -> Any:
    """`connect` for CLI commands: a connection problem is one line on stderr and exit status 2."""
    try:
        return connect(url)
    except FeedbackDBError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        raise SystemExit(2) from None


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def load_migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(sql_dir.glob("*.sql")):
        m = _MIGRATION_RE.match(path.name)
        if not m:
            raise FeedbackDBError(f"migration file name {path.name!r} must look like 001_name.sql")
        migrations.append(Migration(int(m.group(1)), path.name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise FeedbackDBError(f"two migrations in {str(sql_dir)!r} share a version number: {versions!r}")
    return migrations


def migrate(conn: Any, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply the pending migrations in order; return the names applied (empty when up to date)."""
    applied: list[str] = []
    for migration in load_migrations(sql_dir):
        with conn.cursor() as cur:
            # Serialize concurrent migrators (two schedulers starting at once).
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT name, checksum FROM schema_migrations WHERE version = %s", (migration.version,))
            row = cur.fetchone()
            if row is not None:
                conn.rollback()
                if row[1] != migration.checksum:
                    raise FeedbackDBError(
                        f"migration {migration.name!r} was changed after it was applied (as {row[0]!r}); "
                        "add a new numbered migration instead of editing an applied one"
                    )
                continue
            cur.execute(migration.sql)
            cur.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        conn.commit()
        log.info("applied migration %s", migration.name)
        applied.append(migration.name)
    return applied


def schema_version(conn: Any) -> int:
    """The highest applied migration version, 0 for an empty database."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
            conn.rollback()
            return 0
        cur.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
        version = int(cur.fetchone()[0])
    conn.rollback()
    return version


def create_database(admin_url: str, prefix: str = "persona_dpo_feedback") -> str:
    """Create a fresh database with a random name on the server of `admin_url`; return its URL.

    For tests and benchmarks, which must not touch a real feedback table.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    # A database name is an identifier, which cannot be a parameter;
    # the name is generated here, never taken from input.
    _admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def _admin_execute(admin_url: str, sql: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE refuse to run inside one)."""
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database `url` names, disconnecting whoever is still on it."""
    name = urlsplit(url).path.lstrip("/")
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"refusing to drop database {name!r}: not a name create_database makes")
    _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def add_db_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db-url", default=None,
        help=f"postgresql:// URL of the feedback database (default: ${URL_ENV}, else the Airflow connection {DEFAULT_CONN_ID!r})",
    )


def make_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Apply the feedback database migrations (idempotent).")
    add_db_args(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    conn = connect_for_cli(args.db_url)
    try:
        applied = migrate(conn)
        version = schema_version(conn)
    finally:
        conn.close()
    if applied:
        print(f"applied {len(applied)} migration(s): {', '.join(applied)}; schema version {version}")
    else:
        print(f"feedback database is up to date (schema version {version})")
    return 0
