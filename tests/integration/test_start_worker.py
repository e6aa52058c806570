"""The embedded worker in-process: ``start_worker``/``stop_worker``,
``embedded_worker`` and the hand-back of a running task at stop. Under
``flask run`` and other commands it is tested in
``tests/processes/test_worker_thread.py``."""

from __future__ import annotations

import gc
import threading
import typing as t
import weakref
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from helpers import wait_for


def test_start_worker_refuses_under_testing(sqlite_uri: str, tmp_path: Path) -> None:
    app, db, queue = create_test_app(sqlite_uri, tmp_path / "instance")
    assert app.testing
    with pytest.raises(RuntimeError, match="force=True"):
        queue.start_worker(app)
    assert queue.embedded_worker(app) is None
    with app.app_context():
        db.engine.dispose()


def test_start_and_stop_worker_in_process(database_uri: str, tmp_path: Path) -> None:
    # A long poll interval: only the wake-up on enqueue makes the task prompt.
    app, db, queue = create_test_app(
        database_uri, tmp_path / "instance", PLAINQUEUE_POLL_INTERVAL=30.0
    )
    ran = threading.Event()
    seen: list[t.Any] = []

    @queue.task(name="signal_event")
    def signal_event(data: t.Any) -> None:
        seen.append((data, threading.current_thread().name))
        ran.set()

    with app.app_context():
        db.create_all()
    assert queue.embedded_worker(app) is None
    thread = queue.start_worker(app, force=True)
    try:
        assert thread.is_alive()
        assert queue.embedded_worker(app) is thread
        assert queue.start_worker(app, force=True) is thread
        with app.app_context():
            queue.perform(signal_event, {"n": 1})
        assert ran.wait(30), "the worker thread did not run the task"
        assert seen[0][0] == {"n": 1}
        assert seen[0][1] != threading.current_thread().name
    finally:
        assert queue.stop_worker(app, timeout=10)
    assert not thread.is_alive()
    assert queue.embedded_worker(app) is None
    # The queue keeps no reference to the stopped worker: it is not woken any
    # more, and is freed once its watchdog thread has seen the stop.
    worker = weakref.ref(thread.worker)
    del thread

    def freed() -> bool:
        gc.collect()
        return worker() is None

    wait_for(freed, timeout=10, message="the stopped worker to be freed")
    # Stopping twice is harmless.
    assert queue.stop_worker(app)
    with app.app_context():
        wait_for(
            lambda: (
                db.session.scalar(
                    sa.select(sa.func.count()).select_from(queue.Task.__table__)
                )
                == 0
            )
        )
        db.session.remove()
        db.engine.dispose()


def test_stop_worker_hands_back_a_running_task(
    database_uri: str, tmp_path: Path
) -> None:
    app, db, queue = create_test_app(database_uri, tmp_path / "instance")
    started = threading.Event()
    release = threading.Event()

    @queue.task(name="wait_for_release")
    def wait_for_release(data: t.Any) -> None:
        started.set()
        release.wait(30)

    with app.app_context():
        db.create_all()
    thread = queue.start_worker(app, force=True)
    try:
        with app.app_context():
            queue.perform(wait_for_release)
        assert started.wait(30)
        # The grace period runs out while the task still runs: handed back.
        assert queue.stop_worker(app, timeout=0.2)
        assert not thread.is_alive()
        assert thread.worker.abandoned == 1
        with app.app_context():
            task = db.session.scalars(sa.select(queue.Task)).one()
            assert task.lease_owner is None
            assert task.status == "queued"
            assert task.attempts == 1
    finally:
        release.set()
        queue.stop_worker(app, timeout=10)
        # The abandoned claim loop (a daemon thread) ends once the task returns,
        # after writing what it finished: let it, before the engine goes.
        wait_for(
            lambda: (
                not any(
                    x.name.startswith("plainqueue-loop-") for x in threading.enumerate()
                )
            ),
            message="the abandoned claim loop to end",
        )
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
