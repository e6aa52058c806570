"""Two apps whose queue tables have the same name in two schemas of one
PostgreSQL database (a schema per tenant, or staging beside production): each
one's NOTIFYs wake only its own workers and streams. The channel names the
table's schema; it was the table's name alone, so every perform woke the
workers of every schema, each to claim nothing."""

from __future__ import annotations

import contextlib
import queue as queue_module
import typing as t
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app

from flask_plainqueue.pg_listen import Listener
from flask_plainqueue.postgresql import PostgreSQLBackend

pytestmark = pytest.mark.postgresql

TIMEOUT = 60.0


class Side(t.NamedTuple):
    app: t.Any
    db: t.Any
    queue: t.Any
    backend: PostgreSQLBackend


@contextlib.contextmanager
def _schema(postgresql_uri: str, schema: str) -> Iterator[str]:
    """``postgresql_uri`` with a new schema ``schema`` first on the
    ``search_path``, dropped afterwards."""
    url = sa.make_url(postgresql_uri)
    admin = sa.create_engine(url, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    query = dict(url.query)
    query["options"] = f"-csearch_path={schema}"
    try:
        yield url.set(query=query).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def other_schema_uri(postgresql_uri: str) -> Iterator[str]:
    with _schema(postgresql_uri, f"pq_other_{uuid.uuid4().hex[:12]}") as uri:
        yield uri


@pytest.fixture
def sides(
    postgresql_uri: str, other_schema_uri: str, tmp_path: Path
) -> Iterator[list[Side]]:
    """Two apps, each with the default table name in its own schema."""
    made = []
    for n, uri in enumerate([postgresql_uri, other_schema_uri]):
        app, db, queue = create_test_app(uri, tmp_path / f"instance{n}")

        @queue.task(name="t", queue=f"queue{n}")
        def task(data: t.Any) -> None: ...

        with app.app_context():
            db.create_all()
            backend = queue.store().backend
        assert isinstance(backend, PostgreSQLBackend)
        made.append(Side(app, db, queue, backend))
    assert made[0].queue.store(made[0].app).tables.tasks.name == (
        made[1].queue.store(made[1].app).tables.tasks.name
    )
    yield made
    for side in made:
        with side.app.app_context():
            side.db.session.remove()
            side.db.drop_all()
            side.db.engine.dispose()


def _listen(
    side: Side, changes: bool
) -> tuple[Listener, queue_module.Queue[str | None]]:
    received: queue_module.Queue[str | None] = queue_module.Queue()
    make = side.backend.change_watcher if changes else side.backend.watcher
    listener = make(received.put, "test")
    assert isinstance(listener, Listener)
    listener.start()
    assert listener.wait_listening(TIMEOUT)
    # The first call says "you may have missed some" after connecting.
    assert received.get(timeout=TIMEOUT) is None
    return listener, received


@pytest.mark.parametrize("changes", [False, True], ids=["new-tasks", "changes"])
def test_each_schema_hears_its_own_notifications_only(
    sides: list[Side], changes: bool
) -> None:
    """Each schema in turn notifies, twice round. A connection hears
    notifications in commit order, so had a listener heard the other schema's,
    its first two would not both be its own."""
    listeners = [_listen(side, changes) for side in sides]
    try:
        for _ in range(2):
            for side in sides:
                with side.app.app_context():
                    task_id = side.queue.perform("t", 1)
                    # A cancel announces the change on the changes channel.
                    if changes:
                        assert side.queue.cancel(task_id)
        for n, (_, received) in enumerate(listeners):
            # The ids 1 and 2 in each schema; the queue's name for new tasks.
            own = ["1", "2"] if changes else [f"queue{n}"] * 2
            heard = [received.get(timeout=TIMEOUT) for _ in own]
            assert heard == own, n
        # Different channels, each within PostgreSQL's 63 bytes.
        channels = {listener.channel for listener, _ in listeners}
        assert len(channels) == 2
        assert all(len(c.encode()) <= 63 for c in channels)
    finally:
        for listener, _ in listeners:
            listener.stop()


def test_a_channel_past_63_bytes_still_wakes_its_listener(
    postgresql_uri: str, tmp_path: Path
) -> None:
    """A long schema name with a letter of two bytes and a mixed-case table:
    ``schema.table`` is past PostgreSQL's 63 bytes, so the channel is its md5
    (PostgreSQL refuses a longer channel name)."""
    schema = f"pq_schéma_{uuid.uuid4().hex}_{'x' * 16}"
    with _schema(postgresql_uri, schema) as uri:
        app, db, queue = create_test_app(
            uri, tmp_path / "instance", PLAINQUEUE_TABLE="Long_Tasks"
        )
        queue.task(name="t", queue="q")(lambda data: None)
        with app.app_context():
            db.create_all()
            backend = queue.store().backend
            assert isinstance(backend, PostgreSQLBackend)
            listeners = [
                _listen(Side(app, db, queue, backend), changes)
                for changes in (False, True)
            ]
            try:
                task_id = queue.perform("t", 1)
                assert queue.cancel(task_id)
                assert listeners[0][1].get(timeout=TIMEOUT) == "q"
                assert listeners[1][1].get(timeout=TIMEOUT) == str(task_id)
                channels = [listener.channel for listener, _ in listeners]
                assert len((schema + ".Long_Tasks").encode()) > 63
                assert [len(c) for c in channels] == [32, 32 + len("_changes")]
            finally:
                for listener, _ in listeners:
                    listener.stop()
                db.session.remove()
                db.drop_all()
                db.engine.dispose()
