"""An idle SQLite worker wakes on writes to the WAL file (inotify) rather than
by polling (issue 12, pickup latency): the watch returns when another
connection commits, ignores the other files of the directory, and is absent
where there is nothing to watch, which leaves the worker polling."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from flask_plainqueue.sqlite_watch import WalWatch

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="inotify is Linux's"
)
pytest.importorskip("inotify_simple")


def _database(tmp_path: Path) -> Path:
    path = tmp_path / "queue.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    return path


def test_watch_returns_when_another_connection_commits(tmp_path: Path) -> None:
    path = _database(tmp_path)
    watch = WalWatch.open(str(path), "test")
    assert watch is not None
    waiting = threading.Event()
    took: list[float] = []

    def waiter() -> None:
        waiting.set()
        start = time.monotonic()
        watch.wait(60.0)
        took.append(time.monotonic() - start)

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        assert waiting.wait(30)
        conn = sqlite3.connect(path)
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        conn.close()
        thread.join(60)
        assert not thread.is_alive()
        # Woken by the write, not by the 60 s timeout.
        assert took and took[0] < 30
    finally:
        thread.join(60)
        watch.close()


def test_watch_ignores_other_files_of_the_directory(tmp_path: Path) -> None:
    path = _database(tmp_path)
    watch = WalWatch.open(str(path), "test")
    assert watch is not None
    try:
        (tmp_path / "app.log").write_text("a line\n")
        start = time.monotonic()
        watch.wait(0.5)
        assert time.monotonic() - start >= 0.5
    finally:
        watch.close()


@pytest.mark.parametrize("database", [None, "", ":memory:"])
def test_no_watch_without_a_file(database: str | None) -> None:
    assert WalWatch.open(database, "test") is None


def test_no_watch_of_a_missing_directory(tmp_path: Path) -> None:
    assert WalWatch.open(str(tmp_path / "gone" / "queue.db"), "test") is None
