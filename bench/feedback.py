"""Threshold-query cost on a large feedback table.

Creates a throwaway database on the local PostgreSQL, loads N feedback rows
(default 1,000,000) spread over the six personas with COPY, and times the
monitor's poll (`dpo_tasks.feedback.rule.WINDOW_SQL`) per persona for two
watermarks: a recent one (the usual case: the last ~1% of a persona's
ratings are new) and 0 (worst case: nothing consumed yet, the whole history
counts), and, for comparison, a plain count of every waiting row (what the
poll would cost without the `feedback_rollup` table). Prints the EXPLAIN
(ANALYZE, BUFFERS) plan of the poll. Goal: an index scan and under 50 ms per
persona. The database is dropped at the end.

Then `ingest-feedback` itself: a JSONL file of `--ingest-rows` ratings
(default 1,000,000; a tenth with an app id) is loaded by the CLI in a
subprocess, once with `--dry-run` and once into a fresh database, and the wall
time and the peak RSS of that process are printed (goal: under 300 MB).

    python bench/feedback.py [--rows 1000000] [--polls 20] [--ingest-rows 1000000] [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

from dpo_tasks.config import load_personas
from dpo_tasks.feedback.db import create_database, drop_database, migrate
from dpo_tasks.feedback.rule import WINDOW_SQL, poll_window


class RowStream(io.RawIOBase):
    """A file-like object producing COPY text rows on demand, so 1M rows never sit in memory at once."""

    def __init__(self, personas: list[str], rows: int, seed: int = 7):
        self._rng = random.Random(seed)
        self._personas, self._left, self._buf = personas, rows, b""

    def readable(self) -> bool:
        return True

    def _chunk(self, n: int) -> bytes:
        lines = []
        rng = self._rng
        for _ in range(min(n, self._left)):
            pid = rng.choice(self._personas)
            good = rng.random() < 0.7
            k = rng.randrange(500)
            lines.append(
                f"{pid}\tv{rng.randrange(1, 6)}\trecipe request {k} for {pid}\t"
                f"{'a fitting' if good else 'an off-persona'} recipe answer {rng.randrange(10**6)}\t"
                f"{'good' if good else 'bad'}\t\\N\n"
            )
        self._left -= len(lines)
        return "".join(lines).encode()

    def readinto(self, b) -> int:
        while len(self._buf) < len(b) and self._left:
            self._buf += self._chunk(5000)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def load(conn, personas: list[str], rows: int) -> float:
    start = time.perf_counter()
    with conn.cursor() as cur:
        cur.copy_expert(
            "COPY feedback (persona_id, model_version, prompt, response, rating, comment) FROM STDIN",
            io.BufferedReader(RowStream(personas, rows), buffer_size=1 << 20),
        )
    conn.commit()
    return time.perf_counter() - start


def set_watermark(conn, persona_id: str, last_id: int) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO feedback_watermarks (persona_id, last_feedback_id) VALUES (%s, %s)"
            " ON CONFLICT (persona_id) DO UPDATE SET last_feedback_id = excluded.last_feedback_id",
            (persona_id, last_id),
        )
    conn.commit()


def time_polls(conn, persona_id: str, polls: int) -> tuple[float, int]:
    poll_window(conn, persona_id)  # warm the cache, as a monitor polling every minute would
    times = []
    for _ in range(polls):
        start = time.perf_counter()
        window = poll_window(conn, persona_id)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, window.total


ROW_COUNT_SQL = (
    "SELECT count(*), count(*) FILTER (WHERE rating = 'good') FROM feedback WHERE persona_id = %s AND id > %s"
)


def time_row_count(conn, persona_id: str, last_id: int, polls: int) -> float:
    """The same count without the rollup (index-only scan of every waiting row), for comparison."""
    times = []
    with conn.cursor() as cur:
        for _ in range(polls + 1):
            start = time.perf_counter()
            cur.execute(ROW_COUNT_SQL, (persona_id, last_id))
            cur.fetchone()
            times.append(time.perf_counter() - start)
    conn.rollback()
    return statistics.median(times[1:]) * 1000


def explain(conn, persona_id: str) -> str:
    with conn.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + WINDOW_SQL, {"persona_id": persona_id})
        plan = "\n".join(r[0] for r in cur.fetchall())
    conn.rollback()
    return plan


def write_ingest_file(path: Path, personas: list[str], rows: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            pid = rng.choice(personas)
            row = {"persona_id": pid, "prompt": f"recipe request {rng.randrange(500)} for {pid}",
                   "response": f"a recipe answer {rng.randrange(10**6)} " + "with some steps " * 8,
                   "rating": "good" if rng.random() < 0.7 else "bad", "model_version": f"v{rng.randrange(1, 6)}"}
            if i % 10 == 0:
                row["id"] = f"app-{i}"
            fh.write(json.dumps(row) + "\n")


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS in MB, exit code, last stdout line) of one CLI process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "dpo_tasks", *argv], stdout=subprocess.PIPE, stderr=err, env=env)
        out = proc.stdout.read().decode()  # type: ignore[union-attr]
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        err.seek(0)
        text = out.strip() or err.read().decode(errors="replace").strip()
    return wall, usage.ru_maxrss / 1024, proc.returncode, text.splitlines()[-1] if text else ""


def bench_ingest(admin_url: str, personas: list[str], rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "feedback.jsonl"
        write_ingest_file(path, personas, rows)
        size_mb = path.stat().st_size / 2**20
        url = create_database(admin_url, prefix="bench_ingest")
        try:
            conn = psycopg2.connect(url)
            migrate(conn)
            conn.close()
            env = {**os.environ, "FEEDBACK_DB_URL": url}
            print(f"\ningest-feedback, {rows:,} rows ({size_mb:.0f} MB JSONL, a tenth with an app id), one process each:")
            for label, extra in (("--dry-run", ["--dry-run"]), ("into PostgreSQL", []), ("same file again", [])):
                wall, rss, rc, last = run_measured(["ingest-feedback", str(path), *extra], env)
                print(f"  {label:<16} {wall:6.1f} s  ({rows / wall:,.0f} rows/s)  peak RSS {rss:5.0f} MB  "
                      f"(goal < 300 MB: {'met' if rss < 300 else 'NOT met'})  exit {rc}: {last}")
        finally:
            drop_database(admin_url, url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the poll measurement (0: skip it)")
    parser.add_argument("--polls", type=int, default=20, help="timed polls per persona and watermark (median reported)")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--ingest-rows", type=int, default=1_000_000, help="rows for the ingest-feedback measurement (0: skip)")
    args = parser.parse_args()

    personas = sorted(load_personas().personas)
    if not args.rows:
        if args.ingest_rows:
            bench_ingest(args.admin_url, personas, args.ingest_rows)
        return 0
    url = create_database(args.admin_url, prefix="bench_feedback")
    print(f"database {url.rsplit('/', 1)[1]} (dropped at the end)")
    try:
        conn = psycopg2.connect(url)
        migrate(conn)
        secs = load(conn, personas, args.rows)
        print(f"COPY {args.rows:,} rows over {len(personas)} personas: {secs:.1f} s ({args.rows / secs:,.0f} rows/s)")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE feedback")
            cur.execute("SELECT persona_id, count(*), percentile_disc(0.99) WITHIN GROUP (ORDER BY id) FROM feedback GROUP BY persona_id")
            stats = {pid: (n, p99) for pid, n, p99 in cur.fetchall()}
        conn.autocommit = False

        results: dict[str, list[float]] = {"recent": [], "zero": [], "rows": []}
        print(f"\n{'persona':<32} {'rows':>8} {'new@recent':>10} {'ms@recent':>9} {'new@0':>8} {'ms@0':>7} {'row-count ms@0':>14}")
        for pid in personas:
            n, p99 = stats[pid]
            set_watermark(conn, pid, p99)
            ms_recent, new_recent = time_polls(conn, pid, args.polls)
            set_watermark(conn, pid, 0)
            ms_zero, new_zero = time_polls(conn, pid, args.polls)
            ms_rows = time_row_count(conn, pid, 0, args.polls)
            results["recent"].append(ms_recent)
            results["zero"].append(ms_zero)
            results["rows"].append(ms_rows)
            print(f"{pid:<32} {n:>8,} {new_recent:>10,} {ms_recent:>9.2f} {new_zero:>8,} {ms_zero:>7.1f} {ms_rows:>14.1f}")

        probe = personas[0]
        set_watermark(conn, probe, stats[probe][1])
        plan_recent = explain(conn, probe)
        set_watermark(conn, probe, 0)
        plan_zero = explain(conn, probe)
        print(f"\nplan, watermark at the 99th percentile id ({probe}):\n{plan_recent}")
        print(f"\nplan, watermark 0 ({probe}):\n{plan_zero}")
        index_scan = all("Index Only Scan using feedback_persona_id_idx" in p or "Index Scan using feedback_persona_id_idx" in p
                         for p in (plan_recent, plan_zero))
        worst_recent, worst_zero = max(results["recent"]), max(results["zero"])
        print(
            f"\nper-poll time, worst persona: {worst_recent:.2f} ms with a recent watermark, {worst_zero:.1f} ms with watermark 0 "
            f"(goal < 50 ms: {'met' if max(worst_recent, worst_zero) < 50 else 'NOT met'}); "
            f"index scan: {'yes' if index_scan else 'NO'}"
        )
        print(
            f"rollup vs counting every waiting row (watermark 0): {statistics.mean(results['rows']):.1f} ms / "
            f"{statistics.mean(results['zero']):.1f} ms = {statistics.mean(results['rows']) / statistics.mean(results['zero']):.0f}x faster"
        )
        conn.close()
    finally:
        drop_database(args.admin_url, url)
    if args.ingest_rows:
        bench_ingest(args.admin_url, personas, args.ingest_rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
