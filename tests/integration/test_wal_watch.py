"""An idle SQLite worker wakes on writes to the WAL file (inotify) rather than
by polling (issue 12, pickup latency): the watch returns when another
connection commits, ignores the other files of the directory, and is absent
where there is nothing to watch, which leaves the worker polling."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa

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
    written: list[bool] = []

    def waiter() -> None:
        waiting.set()
        start = time.monotonic()
        written.append(watch.wait(60.0))
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
        assert written == [True]
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
        assert watch.wait(0.5) is False
        assert time.monotonic() - start >= 0.5
    finally:
        watch.close()


@pytest.mark.parametrize("database", [None, "", ":memory:"])
def test_no_watch_without_a_file(database: str | None) -> None:
    assert WalWatch.open(database, "test") is None


def test_no_watch_of_a_missing_directory(tmp_path: Path) -> None:
    assert WalWatch.open(str(tmp_path / "gone" / "queue.db"), "test") is None


def test_a_write_not_yet_committed_is_asked_about_again_soon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inotify can report a write to the WAL file before the commit shows in
    ``data_version`` (and coalesces the events of the rest of that commit):
    the probe then asks again every PROBE_INTERVAL a few times, instead of
    leaving the task waiting for the fallback interval."""
    from flask_plainqueue import sqlite_watch
    from flask_plainqueue.sqlite_watch import ChangeProbe

    path = _database(tmp_path)
    waits: list[float] = []
    done = threading.Event()

    class Watch:
        def wait(self, timeout: float) -> bool:
            waits.append(timeout)
            if len(waits) >= 12:
                done.set()
                time.sleep(0.05)
                return False
            return len(waits) == 1  # one write, never a visible commit

        def close(self) -> None:
            pass

    monkeypatch.setattr(sqlite_watch.WalWatch, "open", classmethod(lambda *a: Watch()))
    engine = sa.create_engine(f"sqlite:///{path}")
    backend = t.cast(t.Any, type("B", (), {"engine": engine}))()
    probe = ChangeProbe(backend, lambda payload: None, name="test")
    probe.start()
    try:
        assert done.wait(30)
    finally:
        probe._stop.set()
        probe.stop()
        engine.dispose()
    fast, slow = sqlite_watch.PROBE_INTERVAL, sqlite_watch.WATCHED_PROBE_INTERVAL
    rechecks = sqlite_watch.RECHECKS_AFTER_WRITE
    assert waits[: 2 + rechecks + 1] == [slow] + [fast] * rechecks + [slow, slow]
