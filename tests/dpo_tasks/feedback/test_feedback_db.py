from __future__ import annotations

import os
import shutil
import subprocess
import sys

import psycopg2
import pytest

from dpo_tasks.feedback.db import SQL_DIR, FeedbackDBError, create_database, drop_database, migrate, redact, schema_version


@pytest.fixture
def empty_db_url(pg_admin_url):
    url = create_database(pg_admin_url, prefix="test_feedback_migrate")
    yield url
    drop_database(pg_admin_url, url)


def _tables(conn) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = {r[0] for r in cur.fetchall()}
    conn.rollback()
    return tables


def test_migrations_apply_once_then_are_a_no_op(empty_db_url):
    conn = psycopg2.connect(empty_db_url)
    try:
        assert schema_version(conn) == 0
        first = migrate(conn)
        assert first == sorted(p.name for p in SQL_DIR.glob("*.sql"))
        assert {"feedback", "feedback_watermarks", "feedback_triggers", "schema_migrations"} <= _tables(conn)
        version = schema_version(conn)
        assert version >= 1
        assert migrate(conn) == []
        assert schema_version(conn) == version
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM schema_migrations")
            assert cur.fetchone()[0] == len(first)
    finally:
        conn.close()


def test_an_applied_migration_edited_later_is_refused(empty_db_url, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    conn = psycopg2.connect(empty_db_url)
    try:
        migrate(conn, sql_dir)
        first = sorted(sql_dir.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited\n")
        with pytest.raises(FeedbackDBError, match=rf"{first.name}.*changed after it was applied"):
            migrate(conn, sql_dir)
    finally:
        conn.close()


def test_a_new_migration_is_applied_on_top(empty_db_url, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    conn = psycopg2.connect(empty_db_url)
    try:
        migrate(conn, sql_dir)
        (sql_dir / "999_extra.sql").write_text("CREATE TABLE extra_table (x int);")
        assert migrate(conn, sql_dir) == ["999_extra.sql"]
        assert schema_version(conn) == 999
        assert "extra_table" in _tables(conn)
    finally:
        conn.close()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "FEEDBACK_DB_URL"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "dpo_tasks", *args], capture_output=True, text=True, env=full_env, timeout=120)


def test_cli_db_migrate_twice(empty_db_url):
    first = _cli("db-migrate", env={"FEEDBACK_DB_URL": empty_db_url})
    assert first.returncode == 0, first.stderr
    assert "applied" in first.stdout
    second = _cli("db-migrate", "--db-url", empty_db_url)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout


def test_cli_unreachable_database_is_one_line_without_the_password():
    url = "postgresql://postgres:s3cret-pw@127.0.0.1:1/nowhere"
    result = _cli("db-migrate", "--db-url", url)
    assert result.returncode == 2
    assert "cannot connect to the feedback database" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "url, expected",
    [
        pytest.param("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db", id="password"),
        pytest.param("postgresql://u@h/db", "postgresql://u@h/db", id="no-password"),
    ],
)
def test_redact(url, expected):
    assert redact(url) == expected


def test_two_migrators_at_once_both_succeed_and_apply_each_file_once(empty_db_url):
    env = {k: v for k, v in os.environ.items() if k != "FEEDBACK_DB_URL"}
    env["FEEDBACK_DB_URL"] = empty_db_url
    procs = [
        subprocess.Popen([sys.executable, "-m", "dpo_tasks", "db-migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    conn = psycopg2.connect(empty_db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM schema_migrations")
            assert cur.fetchone()[0] == len(list(SQL_DIR.glob("*.sql")))
    finally:
        conn.close()
