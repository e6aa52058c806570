"""A worker's heartbeat and its reading of the pauses fail over and over while
the database refuses them: each is logged like a failing claim, the first
failure with its traceback, then a line a minute at most, and the recovery
once. Before, each failed heartbeat was a warning line, and each failed read
of the pauses one a poll interval (a line a second by default). On SQLite and
PostgreSQL."""

from __future__ import annotations

import logging
import typing as t
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from helpers import refusing_trigger
from helpers import wait_for
from helpers import worker_thread

#: For each of the two: the first failure's line, a repeat's, the recovery's.
PHRASES = {
    "heartbeat": (
        "could not record its heartbeat",
        "recording its heartbeat still fails",
        "recording its heartbeat works again",
    ),
    "pauses": (
        "could not read the pauses",
        "reading the pauses still fails",
        "reading the pauses works again",
    ),
}


def _break(what: str, db: t.Any, tables: t.Any) -> Callable[[], None]:
    """Make the database refuse ``what``; return what mends it."""
    if what == "heartbeat":
        return refusing_trigger(
            db.session, tables.workers.name, "UPDATE", message="heartbeat refused"
        )
    # A SELECT cannot be refused by a trigger: the column it reads goes away.
    name = tables.pauses.name

    def rename(old: str, new: str) -> None:
        db.session.rollback()
        db.session.execute(sa.text(f"ALTER TABLE {name} RENAME COLUMN {old} TO {new}"))
        db.session.commit()

    rename("name", "renamed")
    return lambda: rename("renamed", "name")


@pytest.mark.parametrize("what", ["heartbeat", "pauses"])
def test_a_failing_heartbeat_or_pause_read_is_logged_once_then_its_recovery(
    database_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, what: str
) -> None:
    first, repeat, recovery = PHRASES[what]
    app, db, queue = create_test_app(
        database_uri,
        tmp_path / "instance",
        PLAINQUEUE_HEARTBEAT=0.05,
        PLAINQUEUE_WORKER_TIMEOUT=5.0,
        PLAINQUEUE_POLL_INTERVAL=0.05,
    )
    caplog.set_level(logging.DEBUG, logger="flask_plainqueue.worker")

    def failures() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if first in r.getMessage() or repeat in r.getMessage()
        ]

    with app.app_context():
        db.create_all()
        tables = queue.store().tables
        worker = queue.worker(app)
        try:
            with worker_thread(queue, worker):
                wait_for(queue.workers)
                mend = _break(what, db, tables)
                try:
                    # Ten failures in a row, 50 ms apart.
                    wait_for(lambda: len(failures()) >= 10)
                finally:
                    mend()
                wait_for(lambda: recovery in caplog.text)
                # It works on: a task still runs.
                ran: list[int] = []
                queue.task(name="after")(ran.append)
                queue.perform("after", 1)
                wait_for(lambda: ran == [1])
        finally:
            db.session.remove()
            db.drop_all()
            db.engine.dispose()
    loud = [r for r in failures() if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in loud] == [f"Worker {worker.id} {first}; will retry"]
    assert loud[0].exc_info is not None
    assert caplog.text.count(recovery) == 1
    # The worker's other work was not reported as failing.
    assert "claiming failed" not in caplog.text
