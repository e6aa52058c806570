"""Reference rows: the raw-driver claim/delete loop (:mod:`benchmarks.rawworker`)
and raw inserts, on our table."""

from __future__ import annotations

import datetime
import json
import sqlite3
import time
import typing as t
from pathlib import Path

from . import pg
from . import procs
from .common import Barrier
from .common import sqlite_time
from .common import TABLE
from .common import TASK_NAME
from .common import UTC
from .impl_ours import _app
from .impl_ours import _fill
from .impl_ours import _remaining

INSERT_COLUMNS = (
    "name, queue, priority, data, created, run_at, status, attempts, failed_nr"
)


def _row(i: int, now: t.Any) -> tuple[t.Any, ...]:
    return (TASK_NAME, "default", 0, json.dumps({"i": i}), now, now, "queued", 0, 0)


def process(
    *,
    workdir: Path,
    n: int,
    batch: int,
    engine: str = "sqlite",
    pg_url: str | None = None,
    malloc_trim: int | None = None,
) -> dict[str, t.Any]:
    """One raw claim/delete process over ``n`` waiting tasks (written by this,
    another, process, as in real use)."""
    if engine == "sqlite":
        path = workdir / "bench.db"
        return _process(
            workdir, f"sqlite:///{path}", str(path), n, batch, "sqlite", malloc_trim
        )
    with pg.fresh_database(pg_url) as (sa_url, libpq):
        return _process(workdir, sa_url, libpq, n, batch, "postgresql", malloc_trim)


def _process(
    workdir: Path,
    uri: str,
    target: str,
    n: int,
    batch: int,
    engine: str,
    malloc_trim: int | None,
) -> dict[str, t.Any]:
    app = _app(uri, BENCH_TASK="noop")
    _fill(app, uri, n)
    barrier_dir = workdir / "barrier"
    barrier_dir.mkdir()
    extra = {"BENCH_DIR": str(barrier_dir)}
    if malloc_trim is not None:
        extra["MALLOC_TRIM_THRESHOLD_"] = str(malloc_trim)
    env = procs.child_env(**extra)
    log = workdir / "worker.log"
    worker = procs.start(
        ["-m", "benchmarks.rawworker", engine, target, str(batch)], env, log
    )
    barrier = Barrier(barrier_dir)
    try:
        barrier.wait_ready(1, [worker])
        start = barrier.go()
        procs.wait_all([worker], max(120.0, n / 200), log)
    finally:
        procs.stop([worker])
    left = _remaining(app)
    from . import ourapp

    with app.app_context():
        ourapp.db.engine.dispose()
    if left:
        raise RuntimeError(f"{left} tasks left")
    return {"rate": n / (barrier.results()[0]["end"] - start)}


def insert(
    *,
    workdir: Path,
    n: int,
    mode: str,
    engine: str = "sqlite",
    pg_url: str | None = None,
) -> dict[str, t.Any]:
    """Raw inserts into our table: one committed transaction per row
    (``mode="one"``) or one ``executemany`` in one transaction."""
    if engine == "sqlite":
        path = workdir / "bench.db"
        app = _app(f"sqlite:///{path}", BENCH_TASK="noop")
        from . import ourapp

        with app.app_context():
            ourapp.db.engine.dispose()
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        sql = (
            f"INSERT INTO {TABLE} ({INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        start = time.perf_counter()
        if mode == "one":
            for i in range(n):
                now = sqlite_time(datetime.datetime.now(UTC))
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(sql, _row(i, now))
                conn.execute("COMMIT")
        else:
            now = sqlite_time(datetime.datetime.now(UTC))
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, [_row(i, now) for i in range(n)])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
        return {"rate": n / elapsed}
    with pg.fresh_database(pg_url) as (sa_url, libpq):
        app = _app(sa_url, BENCH_TASK="noop")
        from . import ourapp

        with app.app_context():
            ourapp.db.engine.dispose()
        sql = f"INSERT INTO {TABLE} ({INSERT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        with pg.connect(libpq) as conn:
            start = time.perf_counter()
            if mode == "one":
                for i in range(n):
                    conn.execute(sql, _row(i, datetime.datetime.now(UTC)))
                    conn.commit()
            else:
                pg_now = datetime.datetime.now(UTC)
                with conn.cursor() as cur:
                    cur.executemany(sql, [_row(i, pg_now) for i in range(n)])
                conn.commit()
            elapsed = time.perf_counter() - start
        return {"rate": n / elapsed}
