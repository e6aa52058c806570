"""LISTEN/NOTIFY wake-ups on PostgreSQL: what is sent when, the listener's
reconnection (logged once each way), and an idle worker woken by another app.
The listener under gevent (a subprocess) is in
``tests/processes/test_notify_gevent.py``."""

from __future__ import annotations

import datetime
import logging
import queue as queue_module
import threading
import time
import typing as t
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app

from flask_plainqueue import pg_listen
from flask_plainqueue import PlainQueue
from flask_plainqueue.pg_listen import Listener
from flask_plainqueue.postgresql import PostgreSQLBackend

pytestmark = pytest.mark.postgresql

#: Long enough for a loaded machine; a passing test never waits this long.
TIMEOUT = 60.0


class Side(t.NamedTuple):
    app: t.Any
    db: t.Any
    queue: PlainQueue


@pytest.fixture
def table() -> str:
    """A queue table name of this test's own, so that nothing but this test
    is heard on its NOTIFY channel (``schema.table``)."""
    return f"pq_notify_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sides(postgresql_uri: str, tmp_path: Path, table: str) -> Iterator[list[Side]]:
    """Two apps with their own PlainQueue on one schema: tasks one performs reach
    the other's worker only through the database (and NOTIFY), never through the
    in-process wake-up."""
    made: list[Side] = []
    for n in range(2):
        app, db, queue = create_test_app(
            postgresql_uri,
            tmp_path / f"instance{n}",
            PLAINQUEUE_POLL_INTERVAL=30.0,
            PLAINQUEUE_TABLE=table,
        )
        made.append(Side(app, db, queue))
    with made[0].app.app_context():
        made[0].db.create_all()
    yield made
    for side in made:
        with side.app.app_context():
            side.db.session.remove()
            side.db.engine.dispose()


def _backend(side: Side) -> PostgreSQLBackend:
    backend = side.queue.store(side.app).backend
    assert isinstance(backend, PostgreSQLBackend)
    return backend


def _listener(side: Side) -> tuple[Listener, queue_module.Queue[str | None]]:
    """A started listener of ``side``'s table: the store's watcher, or (with
    ``PLAINQUEUE_NOTIFY`` off, when there is none) one made on its backend."""
    received: queue_module.Queue[str | None] = queue_module.Queue()
    watcher = side.queue.store(side.app).watcher(received.put, "test")
    if watcher is None:
        listener = Listener(_backend(side), received.put, name="test")
    else:
        assert isinstance(watcher, Listener)
        listener = watcher
    listener.start()
    assert listener.wait_listening(TIMEOUT)
    # The first call says "you may have missed some" after connecting.
    assert received.get(timeout=TIMEOUT) is None
    return listener, received


def _drain(received: queue_module.Queue[str | None], wait: float) -> list[str | None]:
    got: list[str | None] = []
    deadline = time.monotonic() + wait
    while True:
        try:
            got.append(received.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue_module.Empty:
            return got


def test_perform_notifies_at_commit_only(sides: list[Side]) -> None:
    side = sides[0]

    @side.queue.task(name="t", queue="mail")
    def task(data: t.Any) -> None: ...

    listener, received = _listener(side)
    try:
        with side.app.app_context():
            side.queue.perform(task, 1)
            assert received.get(timeout=TIMEOUT) == "mail"

            side.queue.perform(task, 2, commit=False)
            side.queue.perform_many(task, [3, 4], commit=False)
            # Not delivered while the transaction is open...
            assert _drain(received, 0.5) == []
            side.db.session.commit()
            # ...then once: repeats in one transaction are folded into one.
            assert received.get(timeout=TIMEOUT) == "mail"

            side.queue.perform(task, 5, commit=False)
            side.db.session.rollback()
            side.queue.perform(task, 6, unique_key="k")
            assert received.get(timeout=TIMEOUT) == "mail"
            # A unique task that already waits inserts nothing and sends nothing.
            side.queue.perform(task, 7, unique_key="k")
            assert _drain(received, 0.5) == []
    finally:
        started = time.monotonic()
        listener.stop()
    assert not listener.listening
    assert time.monotonic() - started < 5, "stop() must not wait for a poll"
    listener.stop()  # a second stop does nothing


def test_no_notify_when_disabled(
    postgresql_uri: str, tmp_path: Path, table: str
) -> None:
    app, db, queue = create_test_app(
        postgresql_uri, tmp_path, PLAINQUEUE_NOTIFY=False, PLAINQUEUE_TABLE=table
    )

    @queue.task(name="t")
    def task(data: t.Any) -> None: ...

    with app.app_context():
        db.create_all()
        side = Side(app, db, queue)
        assert not _backend(side).notifies
        # Nothing to listen for: an idle worker polls.
        assert queue.store().watcher(lambda payload: None, "test") is None
        listener, received = _listener(side)
        try:
            queue.perform(task, 1)
            assert _drain(received, 0.5) == []
        finally:
            listener.stop()
            db.session.remove()
            db.engine.dispose()


def _terminate_listen(side: Side) -> int:
    with side.app.app_context():
        with side.db.engine.begin() as conn:
            return len(
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
                        " AND application_name = current_setting('application_name')"
                    )
                ).all()
            )


def test_lost_connection_is_logged_once_each_way(
    sides: list[Side], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pg_listen, "RECONNECT_MIN", 0.01)
    monkeypatch.setattr(pg_listen, "RECONNECT_MAX", 0.05)
    side = sides[0]
    real_connect = Listener._connect
    down = threading.Event()
    attempts: list[float] = []

    def connect(self: Listener) -> None:
        if down.is_set():
            attempts.append(time.monotonic())
            raise sa.exc.OperationalError("connect", {}, Exception("server is down"))
        real_connect(self)

    monkeypatch.setattr(Listener, "_connect", connect)
    caplog.set_level(logging.DEBUG, logger="flask_plainqueue.postgresql")
    listener, received = _listener(side)
    try:
        down.set()
        assert _terminate_listen(sides[1]) == 1
        deadline = time.monotonic() + TIMEOUT
        # Many failed reconnection attempts while "the server is down"...
        while len(attempts) < 20:
            assert time.monotonic() < deadline, "the listener stopped reconnecting"
            time.sleep(0.01)
        assert not listener.listening
        down.clear()
        assert listener.wait_listening(TIMEOUT)
        assert received.get(timeout=TIMEOUT) is None  # wake: tasks may be waiting
        assert listener.connects == 2
    finally:
        listener.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # ...but one line for the loss and one for the recovery.
    assert len(warnings) == 2, warnings
    assert "lost the LISTEN connection" in warnings[0]
    assert "LISTEN is back" in warnings[1]


def _worker_listener(worker: t.Any) -> Listener:
    """The LISTEN connection of a running worker, once it has one."""
    deadline = time.monotonic() + TIMEOUT
    while worker.watcher is None:
        assert time.monotonic() < deadline, "the worker has no watcher"
        time.sleep(0.01)
    assert isinstance(worker.watcher, Listener)
    return worker.watcher


def test_idle_worker_wakes_on_notify_from_another_app(sides: list[Side]) -> None:
    """The worker polls every 30 s; a task performed by another app (another
    process, as far as this worker can tell) starts long before that."""
    worker_side, client_side = sides
    started: queue_module.Queue[float] = queue_module.Queue()

    @worker_side.queue.task(name="record")
    def record(data: t.Any) -> None:
        started.put(time.monotonic())

    @client_side.queue.task(name="record")
    def record_client(data: t.Any) -> None: ...

    worker = worker_side.queue.worker(worker_side.app)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        listener = _worker_listener(worker)
        assert listener.wait_listening(TIMEOUT)
        for n in range(3):
            # Let the worker settle into its long idle wait.
            time.sleep(0.5)
            with client_side.app.app_context():
                performed = time.monotonic()
                client_side.queue.perform(record_client, n)
            latency = started.get(timeout=TIMEOUT) - performed
            assert latency < 10.0, f"picked up after {latency:.1f}s: polled, not woken"
    finally:
        worker.stop(grace=5)
        thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_worker_polls_while_listen_is_unavailable(
    postgresql_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    table: str,
) -> None:
    app, db, queue = create_test_app(
        postgresql_uri,
        tmp_path / "w",
        PLAINQUEUE_POLL_INTERVAL=0.2,
        PLAINQUEUE_TABLE=table,
    )
    client_app, client_db, client_queue = create_test_app(
        postgresql_uri, tmp_path / "c", PLAINQUEUE_TABLE=table
    )
    done = threading.Event()

    @queue.task(name="t")
    def task(data: t.Any) -> None:
        done.set()

    @client_queue.task(name="t")
    def client_task(data: t.Any) -> None: ...

    with app.app_context():
        db.create_all()

    def refuse(self: Listener) -> None:
        raise sa.exc.OperationalError("connect", {}, Exception("no LISTEN for you"))

    monkeypatch.setattr(Listener, "_connect", refuse)
    caplog.set_level(logging.WARNING, logger="flask_plainqueue.postgresql")
    worker = queue.worker(app)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        with client_app.app_context():
            client_queue.perform(client_task, 1)
        assert done.wait(TIMEOUT), "the worker did not fall back to polling"
    finally:
        worker.stop(grace=5)
        thread.join(TIMEOUT)
        for a, d in ((app, db), (client_app, client_db)):
            with a.app_context():
                d.session.remove()
                d.engine.dispose()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "cannot LISTEN" in messages[0], messages


def test_worker_ignores_notifications_of_other_queues(sides: list[Side]) -> None:
    side = sides[0]
    worker = side.queue.worker(side.app, queues=["mail"])
    woken: list[str | None] = []
    monkey = t.cast(t.Any, worker)
    monkey.wake = lambda: woken.append("woken")
    worker.on_change("reports")
    assert woken == []
    worker.on_change("mail")
    worker.on_change("")
    worker.on_change(None)
    assert woken == ["woken"] * 3
    # A worker of every queue wakes for any.
    every = side.queue.worker(side.app)
    monkey = t.cast(t.Any, every)
    monkey.wake = lambda: woken.append("every")
    every.on_change("reports")
    assert woken[-1] == "every"
    side.queue.forget_worker(worker)
    side.queue.forget_worker(every)


def test_health_checks_keep_the_connection_and_lose_nothing(
    sides: list[Side], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While idle the listener checks its connection with a query; notifications
    arriving meanwhile still reach the callback."""
    monkeypatch.setattr(pg_listen, "HEALTH_CHECK_INTERVAL", 0.01)
    side = sides[0]

    @side.queue.task(name="t")
    def task(data: t.Any) -> None: ...

    listener, received = _listener(side)
    try:
        with side.app.app_context():
            for n in range(20):
                side.queue.perform(task, n)
                assert received.get(timeout=TIMEOUT) == "default"
                time.sleep(0.02)
        assert listener.listening
        assert listener.connects == 1
    finally:
        listener.stop()


def test_periodic_ticks_are_on_time_while_listening(sides: list[Side]) -> None:
    """Listening, an idle worker sleeps its whole poll interval (30 s here), but
    not past a periodic task's next tick."""
    side = sides[0]
    runs: queue_module.Queue[float] = queue_module.Queue()

    @side.queue.periodic(every=datetime.timedelta(seconds=1), name="tick")
    def tick() -> None:
        runs.put(time.monotonic())

    with side.app.app_context():
        side.db.create_all()
    worker = side.queue.worker(side.app)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        times = [runs.get(timeout=TIMEOUT) for _ in range(4)]
        assert _worker_listener(worker).listening
    finally:
        worker.stop(grace=5)
        thread.join(TIMEOUT)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) < 10.0, gaps
