"""What the measuring processes share: the queue table's rows written fast with raw
sqlite3, the start barrier, RSS and result reporting."""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import sys
import time
import typing as t
from pathlib import Path

#: The task name every benchmark row carries (``name`` column).
TASK_NAME = "bench_task"
#: Our queue table (the package default).
TABLE = "plainqueue_tasks"
UTC = datetime.timezone.utc


class Skip(Exception):
    """This peer cannot run here (not installed, no server): skip it, not fail."""


def sqlite_time(value: datetime.datetime) -> str:
    """A UTC datetime as the queue stores its ``DateTime`` columns on SQLite
    (naive UTC text, ``YYYY-MM-DD HH:MM:SS.ffffff``)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def fill_sqlite_queue(
    path: Path,
    count: int,
    *,
    status: str = "queued",
    name: str = TASK_NAME,
    data: t.Callable[[int], str] | None = None,
    start: int = 0,
    run_at: datetime.datetime | None = None,
) -> None:
    """Append ``count`` due rows (due at ``run_at``, for a kept succeeded row
    its expiry) to our queue table in ``path`` with one ``executemany`` (the
    table must exist: see :func:`create_schema`)."""
    now = sqlite_time(datetime.datetime.now(UTC) - datetime.timedelta(seconds=1))
    due = now if run_at is None else sqlite_time(run_at)
    make = data or (lambda i: json.dumps({"i": i}))
    rows = (
        (name, "default", 0, make(i), now, due, status, 0, 0)
        for i in range(start, start + count)
    )
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO {TABLE} (name, queue, priority, data, created, run_at,"
            " status, attempts, failed_nr) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def count_rows(path: Path, where: str = "1=1") -> int:
    conn = sqlite3.connect(path)
    try:
        return int(
            conn.execute(f"SELECT count(*) FROM {TABLE} WHERE {where}").fetchone()[0]
        )
    finally:
        conn.close()


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size in MiB, from ``/proc`` (cheap enough to call in a loop)."""
    with open(f"/proc/{pid}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class Barrier:
    """A start line shared through files in ``directory``: each worker process says
    it is ready, then waits for ``go``; the measuring process starts the clock when
    it writes ``go``, so process start-up and imports are never timed."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def ready_and_wait(self, timeout: float = 120.0) -> float:
        """Called in a worker process; returns the wall-clock time of ``go``."""
        (self.directory / f"ready-{os.getpid()}").write_text("")
        go = self.directory / "go"
        deadline = time.monotonic() + timeout
        while not go.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the measuring process never said go")
            time.sleep(0.001)
        return float(go.read_text() or time.time())

    def wait_ready(
        self, count: int, procs: t.Sequence[t.Any] = (), timeout: float = 120.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while len(list(self.directory.glob("ready-*"))) < count:
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"worker process exited early with {proc.returncode}"
                    )
            if time.monotonic() > deadline:
                raise TimeoutError("worker processes never became ready")
            time.sleep(0.005)

    def go(self) -> float:
        start = time.time()
        tmp = self.directory / "go.tmp"
        tmp.write_text(repr(start))
        tmp.rename(self.directory / "go")
        return start

    def done(self, **values: t.Any) -> None:
        """Called in a worker process when it finished: record ``values``."""
        path = self.directory / f"done-{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(values))
        tmp.rename(path)

    def results(self) -> list[dict[str, t.Any]]:
        return [
            json.loads(p.read_text())
            for p in sorted(self.directory.glob("done-*.json"))
        ]


def emit(result: dict[str, t.Any]) -> None:
    """The measuring process's answer: one JSON line on stdout, last."""
    sys.stdout.write("BENCH-RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def percentile(values: t.Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
