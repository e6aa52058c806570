"""PostgreSQL specifics, in-process against the real server: column types
(text, timestamptz), UTC timestamps whatever the session's TimeZone, and
``FOR UPDATE SKIP LOCKED`` claims that neither wait, overlap, nor take more than
a batch. The ``flask queue work`` processes are in
``tests/processes/test_postgresql_workers.py``."""

from __future__ import annotations

import datetime
import logging
import threading
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import refusing_trigger
from helpers import run_threads

from flask_plainqueue import InvalidArgument
from flask_plainqueue import PlainQueue
from flask_plainqueue.claims import ClaimedTask
from flask_plainqueue.claims import ClaimRequest
from flask_plainqueue.claims import Outcomes
from flask_plainqueue.store import Store

pytestmark = pytest.mark.postgresql

UTC = datetime.timezone.utc
#: Generous: the whole machine is shared; a passing run is far quicker.
LONG = 600.0


class PgEnv(t.NamedTuple):
    app: Flask
    db: SQLAlchemy
    queue: PlainQueue
    task: t.Any


@pytest.fixture
def pg_env(postgresql_uri: str, tmp_path: Path) -> Iterator[PgEnv]:
    app, db, queue = create_test_app(postgresql_uri, tmp_path)

    @queue.task(name="t", batch_size=7)
    def task(data: t.Any) -> None: ...

    with app.app_context():
        db.create_all()
        yield PgEnv(app, db, queue, task)
        db.session.remove()
        db.engine.dispose()


def _request(
    owner: str,
    batch_sizes: t.Mapping[str, int],
    *,
    lease: datetime.timedelta = datetime.timedelta(seconds=30),
) -> ClaimRequest:
    now = datetime.datetime.now(UTC)
    return ClaimRequest(
        owner=owner,
        names=sorted(batch_sizes),
        batch_sizes=batch_sizes,
        now=now,
        until=now + lease,
    )


def test_columns_are_text_and_timestamptz(pg_env: PgEnv) -> None:
    app, db, queue, task = pg_env
    queue.perform(task, {"b": [1, 2.5, None], "a": "é"})
    types: dict[str, str] = dict(
        db.session.execute(
            sa.text(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'plainqueue_tasks' AND table_schema = current_schema()"
            )
        ).all()
    )
    # Plain SQLAlchemy types: text data (JSON), timestamps with a time zone.
    assert types["data"] == "text"
    for column in ("created", "run_at", "failed_last"):
        assert types[column] == "timestamp with time zone"
    # JSON text: the server can still query into it.
    assert db.session.execute(
        sa.text("SELECT data::jsonb->'b'->>1 FROM plainqueue_tasks")
    ).scalar() == ("2.5")


def test_timestamps_are_utc_whatever_the_session_timezone(
    postgresql_uri: str, tmp_path: Path
) -> None:
    url = sa.make_url(postgresql_uri)
    options = f"{url.query['options']} -ctimezone=Asia/Tokyo"
    tokyo = url.update_query_dict({"options": options}).render_as_string(False)
    app, db, queue = create_test_app(tokyo, tmp_path)

    @queue.task(name="t")
    def task(data: t.Any) -> None: ...

    run_at = datetime.datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    with app.app_context():
        db.create_all()
        assert db.session.execute(sa.text("SHOW timezone")).scalar() == "Asia/Tokyo"
        # The queue's clock is the server's, read now and then and carried
        # forward: within a round trip of this host's.
        slack = datetime.timedelta(seconds=1)
        before = queue.store().clock()
        task_id = queue.perform(
            task,
            None,
            run_at=run_at.astimezone(datetime.timezone(datetime.timedelta(hours=-5))),
        )
        # The stored instant is the one given, whatever the session shows it in.
        row: t.Any = db.session.scalars(sa.select(queue.Task)).one()
        assert row.run_at == run_at
        # The public API hands it back in UTC.
        info = queue.get(task_id)
        assert info is not None
        assert info.run_at == run_at
        assert info.run_at.utcoffset() == datetime.timedelta(0)
        assert info.created.utcoffset() == datetime.timedelta(0)
        assert before - slack <= info.created <= queue.store().clock() + slack
        db.session.remove()
        db.engine.dispose()


def test_nul_character_in_data_round_trips(pg_env: PgEnv) -> None:
    """``text`` cannot hold NUL, but task data is JSON, where NUL is escaped:
    it is stored, and reaches the task unchanged."""
    app, db, queue, task = pg_env
    received: list[t.Any] = []

    @queue.task(name="nul")
    def nul(data: t.Any) -> None:
        received.append(data)

    queue.perform(nul, {"text": "a\x00b"})
    queue.perform_many(nul, ["fine", ["a\x00"]])
    # An escaped backslash followed by "u0000" is fine too, and stays itself.
    queue.perform(task, "\\u0000")
    stored = db.session.scalars(
        sa.select(queue.Task.data).order_by(queue.Task.id)
    ).all()
    assert stored == ['{"text":"a\\u0000b"}', '"fine"', '["a\\u0000"]', '"\\\\u0000"']
    assert queue.drain() == 4
    assert received == [{"text": "a\x00b"}, "fine", ["a\x00"]]
    # A unique key is stored as itself, so it cannot hold one.
    with pytest.raises(InvalidArgument, match="NUL"):
        queue.perform(task, 1, unique_key="a\x00b")


def test_claim_skips_rows_locked_by_another_claim(pg_env: PgEnv) -> None:
    """A row another transaction holds is skipped, not waited for."""
    app, db, queue, task = pg_env
    ids = queue.perform_many(task, list(range(10)))
    store = queue.store(app)
    claimed: list[int] = []
    with store.engine.connect() as locker:
        locked = (
            locker.execute(
                sa.text(
                    "SELECT id FROM plainqueue_tasks ORDER BY priority DESC, run_at, id"
                    " LIMIT 3 FOR UPDATE"
                )
            )
            .scalars()
            .all()
        )
        assert locked == ids[:3]

        def claim() -> None:
            tasks = store.claim(_request("other", {"t": 5}))
            claimed.extend(x.id for x in tasks)

        thread = threading.Thread(target=claim)
        thread.start()
        thread.join(30)
        blocked = thread.is_alive()
        locker.rollback()
    thread.join(30)
    assert not blocked, "the claim waited for the locked rows"
    assert sorted(claimed) == ids[3:8]


def test_concurrent_claims_never_take_one_row_twice(pg_env: PgEnv) -> None:
    app, db, queue, task = pg_env
    ids = set(queue.perform_many(task, list(range(1000))))
    store = queue.store(app)
    results: dict[int, list[int]] = {n: [] for n in range(8)}

    def claimer(n: int) -> None:
        while True:
            tasks = store.claim(
                _request(f"w{n}", {"t": 7}, lease=datetime.timedelta(minutes=5))
            )
            if not tasks:
                return
            assert len(tasks) <= 7
            results[n].extend(x.id for x in tasks)

    run_threads(claimer, 8, LONG)
    everything = [i for got in results.values() for i in got]
    assert len(everything) == len(set(everything)) == 1000
    assert set(everything) == ids
    assert sum(1 for got in results.values() if got) > 1
    owners = db.session.execute(
        sa.text("SELECT count(DISTINCT lease_owner) FROM plainqueue_tasks")
    ).scalar()
    assert owners == sum(1 for got in results.values() if got)


def _claim_concurrently(
    store: Store, batch_sizes: dict[str, int], claimers: int
) -> tuple[list[tuple[str, list[ClaimedTask]]], list[BaseException]]:
    """``claimers`` threads, each claiming through the store (so on a pooled
    connection of its own) until nothing is due; every batch with its owner."""
    batches: list[tuple[str, list[ClaimedTask]]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(claimers)

    def claimer(owner: str) -> None:
        try:
            barrier.wait()
            while True:
                batch = store.claim(
                    _request(owner, batch_sizes, lease=datetime.timedelta(minutes=5))
                )
                if not batch:
                    return
                with lock:
                    batches.append((owner, batch))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=claimer, args=(f"c{n}",)) for n in range(claimers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LONG)
    assert not any(thread.is_alive() for thread in threads)
    return batches, errors


@pytest.mark.parametrize("batch_size", [1, 3, 25])
def test_eight_concurrent_claimers_never_exceed_the_batch_size(
    pg_env: PgEnv, batch_size: int
) -> None:
    """Under 8 concurrent claimers (threads, each on its own connection) a claim
    returns at most ``batch_size`` rows, all of one name, and no row is claimed
    twice: the lock is taken in a CTE, which PostgreSQL evaluates once."""
    app, db, queue, task = pg_env

    @queue.task(name="u", batch_size=batch_size)
    def other(data: t.Any) -> None: ...

    sizes = {"t": batch_size, "u": max(1, batch_size // 2)}
    # Two names, mixed priorities: the claimers keep switching names.
    ids = set(queue.perform_many(task, list(range(400))))
    ids |= set(queue.perform_many(other, list(range(200)), priority=1))
    ids |= set(queue.perform_many(task, list(range(100)), priority=2))
    store = queue.store(app)
    batches, errors = _claim_concurrently(store, sizes, claimers=8)
    assert errors == []
    for owner, batch in batches:
        assert len(batch) <= sizes[batch[0].name], (owner, len(batch))
        assert len({task.name for task in batch}) == 1
        assert all(task.attempts == 1 for task in batch)
    everything = [task.id for _, batch in batches for task in batch]
    assert len(everything) == len(set(everything)) == len(ids)
    assert set(everything) == ids
    assert len({owner for owner, _ in batches}) > 1
    # Each row is leased to the claimer that got it, and to no other.
    held: dict[int, str] = dict(
        db.session.execute(
            sa.text("SELECT id, lease_owner FROM plainqueue_tasks")
        ).all()
    )
    for owner, batch in batches:
        for claimed in batch:
            assert held[claimed.id] == owner


def test_claim_failures_are_logged_once_and_so_is_the_recovery(
    postgresql_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A database that is away for a while (a restart, a failover) makes every
    claim fail: one traceback, not one per poll, then one line when it is back."""
    app, db, queue = create_test_app(
        postgresql_uri, tmp_path, PLAINQUEUE_POLL_INTERVAL=0.05
    )
    ran = threading.Event()

    @queue.task(name="t")
    def task(data: t.Any) -> None:
        ran.set()

    with app.app_context():
        db.create_all()
        queue.perform(task, None)
    store = queue.store(app)
    real_claim = store.claim
    failures: list[int] = []

    def claim(
        request: ClaimRequest, outcomes: Outcomes | None = None
    ) -> list[ClaimedTask]:
        if len(failures) < 30:
            failures.append(1)
            raise sa.exc.OperationalError("claim", {}, Exception("server restarting"))
        return real_claim(request, outcomes)

    monkeypatch.setattr(store, "claim", claim)
    caplog.set_level(logging.DEBUG, logger="flask_plainqueue.worker")
    worker = queue.worker(app)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert ran.wait(LONG)
    finally:
        worker.stop(grace=5)
        thread.join(LONG)
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    assert len(failures) == 30
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 2, [r.getMessage() for r in loud]
    assert loud[0].getMessage().endswith("claiming failed; will retry")
    assert loud[0].exc_info is not None
    assert "claiming works again after" in loud[1].getMessage()


def test_an_error_in_the_pipelined_settle_rolls_the_claim_back(pg_env: PgEnv) -> None:
    """What a claim sends in one round trip before its UPDATE (the settle of
    the last batch among it) can fail: the error is raised from the claim,
    nothing of that transaction stays (the finished task is still there, no
    task is leased), and the next claim on the pool works."""
    app, db, queue, task = pg_env
    ids = [queue.perform(task, i) for i in range(3)]
    store = queue.store()
    held = store.claim(_request("w1", {"t": 1}))
    assert [c.id for c in held] == [ids[0]]
    drop = refusing_trigger(
        db.session,
        "plainqueue_tasks",
        "DELETE",
        when=f"OLD.id = {ids[0]}",
        message="boom",
    )
    done = Outcomes(completed=[(held[0].id, held[0].attempts)])
    with pytest.raises(Exception, match="boom"):
        store.claim(_request("w1", {"t": 1}), done)
    leased = db.session.execute(
        sa.text("SELECT id FROM plainqueue_tasks WHERE lease_owner IS NOT NULL")
    ).scalars()
    assert list(leased) == [ids[0]]
    drop()
    again = store.claim(_request("w1", {"t": 1}), done)
    assert [c.id for c in again] == [ids[1]]
    remaining = db.session.execute(sa.text("SELECT id FROM plainqueue_tasks")).scalars()
    assert sorted(remaining) == ids[1:]


def test_perform_on_an_idle_session_is_one_autocommitted_insert(pg_env: PgEnv) -> None:
    """With nothing of the caller's to commit, ``perform`` sends one INSERT in
    autocommit (one round trip) instead of BEGIN, INSERT and COMMIT through
    the session; the task is committed when it returns."""
    app, db, queue, task = pg_env
    queue.perform(task, {"n": 0})  # the first reads the database's clock
    seen: list[tuple[str, bool]] = []

    def before(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        seen.append(
            (statement.split()[0], conn.connection.driver_connection.autocommit)
        )

    sa.event.listen(db.engine, "before_cursor_execute", before)
    try:
        task_id = queue.perform(task, {"n": 1})
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", before)
    assert seen == [("INSERT", True)]
    assert not db.session().in_transaction()
    with db.engine.connect() as other:
        stored = other.execute(
            sa.text("SELECT data FROM plainqueue_tasks WHERE id = :id"), {"id": task_id}
        ).scalar_one()
    assert stored == '{"n":1}'
    # With the caller's own work pending, the row joins it as before.
    db.session.execute(sa.text("SELECT 1"))
    seen.clear()
    sa.event.listen(db.engine, "before_cursor_execute", before)
    try:
        queue.perform(task, {"n": 2})
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", before)
    assert seen == [("INSERT", False)]


def test_a_perform_hands_its_connection_back_out_of_autocommit(pg_env: PgEnv) -> None:
    """The connection goes back to the pool as it came: a later session on it
    still has a transaction to roll back."""
    app, db, queue, task = pg_env
    for n in range(5):
        queue.perform(task, n)
    # Every pooled connection at once, the ones the performs used among them.
    size = db.engine.pool.size()  # type: ignore[attr-defined]
    conns = [db.engine.connect() for _ in range(size)]
    try:
        drivers: list[t.Any] = [c.connection.driver_connection for c in conns]
        assert [driver.autocommit for driver in drivers] == [False] * size
        conns[0].execute(sa.text("DELETE FROM plainqueue_tasks"))
        conns[0].rollback()
    finally:
        for conn in conns:
            conn.close()
    assert queue.count() == 5


def test_a_refused_perform_raises_and_stores_nothing(pg_env: PgEnv) -> None:
    """An INSERT the database refuses (here a trigger) raises SQLAlchemy's
    error from ``perform``; nothing is stored, and the next perform works."""
    app, db, queue, task = pg_env
    drop = refusing_trigger(db.session, "plainqueue_tasks", "INSERT")
    with pytest.raises(sa.exc.DBAPIError, match="refused"):
        queue.perform(task, 1)
    assert not db.session().in_transaction()
    drop()
    assert queue.count() == 0
    queue.perform(task, 2)
    assert queue.count() == 1


def test_performs_after_the_server_ended_the_pools_connections(pg_env: PgEnv) -> None:
    """The server ends every pooled connection (a restart, a failover): the
    first ``perform`` on one raises SQLAlchemy's ``OperationalError`` and
    stores nothing; the pool is then replaced as a whole, so each later
    ``perform`` works, whichever connection it would have had."""
    app, db, queue, task = pg_env
    queue.perform(task, 0)  # reads the database's clock, too
    conns = [db.engine.connect() for _ in range(3)]
    pids = [c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() for c in conns]
    for conn in conns:
        conn.close()
    db.session.remove()
    with sa.create_engine(db.engine.url, poolclass=sa.pool.NullPool).connect() as other:
        for pid in pids:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
    with pytest.raises(sa.exc.OperationalError):
        queue.perform(task, 1)
    for n in range(2, 6):
        queue.perform(task, n)
    data = db.session.execute(
        sa.text("SELECT data FROM plainqueue_tasks ORDER BY id")
    ).scalars()
    assert list(data) == ["0", "2", "3", "4", "5"]
