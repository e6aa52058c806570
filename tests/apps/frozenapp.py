"""Tasks for the frozen-worker tests (``tests/processes/test_frozen_worker.py``):
a worker is stopped with ``SIGSTOP`` while one of these runs, then resumed
with ``SIGCONT``.

Each task that blocks writes ``<name>-started`` (the pid of the process running
it) on its first attempt, then waits for the file ``<name>-release``. Every
attempt appends its pid to ``runs-<name>`` (or ``runs-<key>``), one line each,
so a test counts the runs and sees which worker made them.

``FROZENAPP_DATABASE_URI``
    the SQLAlchemy URI (a SQLite file under the test's ``tmp_path``, or a
    PostgreSQL schema of its own).
``FROZENAPP_DIR``
    the directory of the marker files.
``PLAINQUEUE_*``
    the settings in :data:`SETTINGS`, copied into ``app.config``.
"""

from __future__ import annotations

import os
import time
import typing as t
from pathlib import Path

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue

db = SQLAlchemy()
queue = PlainQueue(db=db)

#: The settings a child process takes from its environment.
SETTINGS = (
    "PLAINQUEUE_LEASE_SECONDS",
    "PLAINQUEUE_SHUTDOWN_GRACE",
    "PLAINQUEUE_HEARTBEAT",
    "PLAINQUEUE_WORKER_TIMEOUT",
    "PLAINQUEUE_SQLITE_BUSY_TIMEOUT",
    "PLAINQUEUE_POLL_INTERVAL",
)
#: Kept this long after succeeding, so a test can read who settled it.
KEEP = 600.0
#: Retries far in the future: a failed attempt is not run again by itself.
RETRY_LATER = 3600.0
#: A blocked task gives up waiting after this long (a test that failed
#: half-way leaves no process behind for long).
WAIT_LIMIT = 300.0


class Note(db.Model):  # type: ignore[name-defined,misc]
    """Written by the atomic task and by ``held_callback``'s success callback:
    commits with the row's settle, or not at all."""

    id = db.Column(db.Integer, primary_key=True)
    pid = db.Column(db.Integer, nullable=False)


def marker(name: str) -> Path:
    return Path(os.environ["FROZENAPP_DIR"]) / name


def runs(key: str) -> list[int]:
    """The pids of the attempts recorded under ``key``, in order."""
    path = marker(f"runs-{key}")
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split()]


def _ran(key: str) -> int:
    pid = os.getpid()
    with marker(f"runs-{key}").open("a") as f:
        f.write(f"{pid}\n")
    return pid


def _first_blocks(name: str) -> bool:
    """On the first attempt: say so and wait for the release; return whether
    this was the first attempt."""
    started = marker(f"{name}-started")
    if started.exists():
        return False
    started.write_text(str(os.getpid()))
    release = marker(f"{name}-release")
    deadline = time.monotonic() + WAIT_LIMIT
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return True


@queue.task(name="held", keep_succeeded=KEEP, retry_interval=RETRY_LATER)
def held(late: str) -> int:
    """The first attempt blocks; once released it ends as ``late`` says
    (``succeed`` or ``fail``). Later attempts succeed at once. Returns the pid."""
    first = _first_blocks("held")
    pid = _ran("held")
    if first and late == "fail":
        raise RuntimeError("the late attempt fails")
    return pid


def _noted(data: object) -> None:
    # Commits with the row's settle, or is rolled back with it.
    db.session.add(Note(pid=os.getpid()))


@queue.task(
    name="held_callback",
    keep_succeeded=KEEP,
    retry_interval=RETRY_LATER,
    success=_noted,
)
def held_callback() -> int:
    """Like ``held``, with a success callback that writes a :class:`Note` in
    the transaction that settles the row."""
    _first_blocks("held_callback")
    return _ran("held_callback")


@queue.task(name="gate")
def gate() -> None:
    """Blocks on its first attempt until released (not atomic)."""
    _first_blocks("gate")
    _ran("gate")


@queue.task(name="atomic_hold", atomic=True)
def atomic_hold() -> None:
    """Atomic: on SQLite it holds the database's write lock while it runs."""
    db.session.add(Note(pid=os.getpid()))
    db.session.flush()
    _first_blocks("atomic_hold")
    _ran("atomic_hold")


@queue.task(name="counted")
def counted(key: str) -> None:
    _ran(key)


def create_app(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["FROZENAPP_DATABASE_URI"]
    for key in SETTINGS:
        if key in os.environ:
            app.config[key] = float(os.environ[key])
    app.config.update(config)
    db.init_app(app)
    queue.init_app(app)
    with app.app_context():
        db.create_all()
    return app
