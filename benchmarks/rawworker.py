"""The reference loops: the claim/delete design of our worker written directly on
the driver, no ORM, no app context: ``python -m benchmarks.rawworker ENGINE URL BATCH``.

Each transaction deletes the previous batch (owner- and attempt-checked, as ours)
and claims the next with one ``UPDATE ... RETURNING`` over the same table and
indexes. The tasks are no-ops that decode their JSON. This is the physical limit
of the design on this machine."""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import sys
import time

from .common import Barrier
from .common import sqlite_time
from .common import TABLE
from .common import TASK_NAME
from .common import UTC

SQLITE_CLAIM = (
    f"UPDATE {TABLE} SET lease_owner = ?, run_at = ?, attempts = attempts + 1"
    f" WHERE id IN (SELECT id FROM {TABLE} WHERE status = 'queued' AND lease_owner IS NULL AND run_at <= ?"
    " AND name = ? ORDER BY claim_rank, run_at, id LIMIT ?)"
    " RETURNING id, name, data, attempts"
)
SQLITE_DELETE = f"DELETE FROM {TABLE} WHERE id = ? AND lease_owner = ? AND attempts = ?"

PG_CLAIM = (
    f"UPDATE {TABLE} SET lease_owner = %s, run_at = %s, attempts = attempts + 1"
    f" WHERE id IN (SELECT id FROM {TABLE} WHERE status = 'queued' AND lease_owner IS NULL AND run_at <= %s"
    " AND name = %s ORDER BY claim_rank, run_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
    " RETURNING id, name, data::text, attempts"
)
PG_DELETE = f"DELETE FROM {TABLE} WHERE id = %s AND lease_owner = %s AND attempts = %s"


def run_sqlite(path: str, batch: int) -> int:
    owner = f"raw:{os.getpid()}"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    done: list[tuple[int, str, int]] = []
    total = 0
    while True:
        now = datetime.datetime.now(UTC)
        conn.execute("BEGIN IMMEDIATE")
        if done:
            conn.executemany(SQLITE_DELETE, done)
        rows = conn.execute(
            SQLITE_CLAIM,
            (
                owner,
                sqlite_time(now + datetime.timedelta(seconds=60)),
                sqlite_time(now),
                TASK_NAME,
                batch,
            ),
        ).fetchall()
        conn.execute("COMMIT")
        if not rows:
            return total
        done = []
        for task_id, _name, data, attempts in rows:
            json.loads(data)
            done.append((task_id, owner, attempts))
        total += len(rows)


def run_postgresql(url: str, batch: int) -> int:
    import psycopg

    owner = f"raw:{os.getpid()}"
    conn = psycopg.connect(url)
    done: list[tuple[int, str, int]] = []
    total = 0
    with conn:
        while True:
            now = datetime.datetime.now(UTC)
            with conn.cursor() as cur:
                if done:
                    cur.executemany(PG_DELETE, done)
                cur.execute(
                    PG_CLAIM,
                    (
                        owner,
                        now + datetime.timedelta(seconds=60),
                        now,
                        TASK_NAME,
                        batch,
                    ),
                )
                rows = cur.fetchall()
            conn.commit()
            if not rows:
                return total
            done = []
            for task_id, _name, data, attempts in rows:
                json.loads(data)
                done.append((task_id, owner, attempts))
            total += len(rows)


def main() -> None:
    engine, url, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    barrier = Barrier(os.environ["BENCH_DIR"])
    start = barrier.ready_and_wait()
    total = run_sqlite(url, batch) if engine == "sqlite" else run_postgresql(url, batch)
    barrier.done(start=start, end=time.time(), count=total)


if __name__ == "__main__":
    main()
