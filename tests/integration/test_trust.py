"""Nothing a task, a callback, a receiver, a row or an argument does stops the
worker or changes what was promised (the trust issue). Each test is named after
the behaviour it guards and runs on SQLite and PostgreSQL where the behaviour
exists on both; the issue's item number is in its docstring."""

from __future__ import annotations

import datetime
import json
import logging
import threading
import typing as t

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from conftest import Env
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_plainqueue import ConfigurationError
from flask_plainqueue import InvalidArgument
from flask_plainqueue import PlainQueue
from flask_plainqueue import Retry
from flask_plainqueue import signals
from flask_plainqueue import TaskDataError
from flask_plainqueue import TaskState
from flask_plainqueue.clock import utcnow

INTERRUPTS = [KeyboardInterrupt, SystemExit]


def _row(env: Env, task_id: int) -> t.Any:
    env.db.session.expire_all()
    return env.db.session.get(env.queue.Task, task_id)


def _run_burst(env: Env, **kwargs: t.Any) -> None:
    """A worker in burst mode on a thread of its own, as `flask queue work
    --burst` runs it; fails the test if the thread dies instead of returning.
    One claim loop unless told otherwise, so tasks run in claim order (the
    tests check the order: a later task still runs after a bad one)."""
    kwargs.setdefault("concurrency", 1)
    worker = env.queue.worker(env.app, **kwargs)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(burst=True)
        except BaseException as exc:  # the test fails below with it
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the worker did not finish its burst"
    assert errors == [], f"the worker died: {errors!r}"


def _raise(kind: type[BaseException]) -> t.NoReturn:
    raise kind()


# -- 1: BaseException from a task, a callback or a receiver ----------------------


@pytest.mark.parametrize("kind", INTERRUPTS)
@pytest.mark.parametrize("where", ["body", "failure", "receiver"])
def test_interrupt_in_task_or_failure_path_is_a_failed_attempt_and_worker_goes_on(
    env: Env, app_ctx: None, kind: type[BaseException], where: str
) -> None:
    """Item 1: KeyboardInterrupt/SystemExit from the body, the failure callback
    or a task_failed receiver counts one failed attempt (retried: it says
    nothing about the task), the row is not left leased, and the worker runs
    the tasks after it."""
    queue = env.queue
    ran: list[str] = []

    def failure(data: object, exc: BaseException) -> None:
        if where == "failure":
            _raise(kind)

    @queue.task(name="bad", max_retries=5, retry_interval=3600, failure=failure)
    def bad() -> None:
        if where == "body":
            _raise(kind)
        raise ValueError("plain failure")

    @queue.task(name="good")
    def good() -> None:
        ran.append("good")

    def receiver(sender: object, **kwargs: object) -> None:
        if where == "receiver":
            _raise(kind)

    bad_id = queue.perform(bad)
    queue.perform(good)
    with signals.task_failed.connected_to(receiver):
        _run_burst(env)
    row = _row(env, bad_id)
    assert row is not None
    assert row.failed_nr == 1
    assert row.lease_owner is None or row.run_at > utcnow()
    info = queue.get(bad_id)
    assert info is not None and info.state is TaskState.SCHEDULED
    assert ran == ["good"]


@pytest.mark.parametrize("kind", INTERRUPTS)
def test_interrupt_in_success_callback_keeps_the_worker_and_the_task_done(
    env: Env, app_ctx: None, kind: type[BaseException]
) -> None:
    """Item 1: the body succeeded, so the task is removed; the callback's
    interrupt is logged and the worker goes on with the next task."""
    queue = env.queue
    ran: list[str] = []

    @queue.task(name="ok", success=lambda data: _raise(kind))
    def ok() -> None:
        ran.append("ok")

    @queue.task(name="after")
    def after() -> None:
        ran.append("after")

    ok_id = queue.perform(ok)
    queue.perform(after, priority=-1)
    _run_burst(env)
    assert ran == ["ok", "after"]
    assert queue.get(ok_id) is None


@pytest.mark.parametrize("kind", INTERRUPTS)
def test_interrupt_in_a_started_receiver_does_not_poison_the_row(
    env: Env, app_ctx: None, kind: type[BaseException]
) -> None:
    """Item 1: a task_started receiver that raises on every attempt never kills
    a worker; the row is settled each time and ends dead after max_retries."""
    queue = env.queue

    @queue.task(name="t", max_retries=2, retry_interval=0)
    def task() -> None:
        pass

    task_id = queue.perform(task)

    def receiver(sender: object, **kwargs: object) -> None:
        _raise(kind)

    with signals.task_started.connected_to(receiver):
        for _ in range(3):
            _run_burst(env)
    info = queue.get(task_id)
    # The body ran and succeeded each time; the receiver's interrupt is logged.
    assert info is None


def test_ctrl_c_during_drain_records_a_retryable_attempt_then_propagates(
    env: Env, app_ctx: None
) -> None:
    """Item 1: Ctrl-C in a task under drain() is the caller's: it propagates,
    after the attempt is recorded as a retryable failure (not dead, despite
    max_retries=5)."""
    queue = env.queue

    @queue.task(name="t", max_retries=5, retry_interval=3600)
    def task() -> None:
        raise KeyboardInterrupt

    task_id = queue.perform(task)
    with pytest.raises(KeyboardInterrupt):
        queue.drain()
    info = queue.get(task_id)
    assert info is not None
    assert info.state is TaskState.SCHEDULED
    assert info.failed_nr == 1
    assert info.lease_owner is None
    assert "KeyboardInterrupt" in (info.error or "")


@pytest.mark.parametrize("kind", INTERRUPTS)
def test_interrupt_is_retried_whatever_retry_on_says(
    env: Env, app_ctx: None, kind: type[BaseException]
) -> None:
    queue = env.queue

    @queue.task(name="t", retry_on=ValueError, max_retries=1, retry_interval=3600)
    def task() -> None:
        _raise(kind)

    task_id = queue.perform(task)
    _run_burst(env)
    info = queue.get(task_id)
    assert info is not None and info.state is TaskState.SCHEDULED


# -- 4: one bad row or definition never blocks the others ------------------------


def test_row_with_a_non_integer_priority_does_not_block_claims(
    env: Env, app_ctx: None
) -> None:
    """Item 4, SQLite: a hand-written row whose priority is text (SQLite stores
    what it is given) neither fails every claim nor stops the worker."""
    queue = env.queue
    ran: list[int] = []

    @queue.task(name="t")
    def task(data: int) -> None:
        ran.append(data)

    good = queue.perform(task, 1)
    if env.db.engine.dialect.name == "sqlite":
        bad = queue.perform(task, 2)
        with env.db.engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE {queue.Task.__table__.name} SET priority = 'high'"
                f" WHERE id = {int(bad)}"
            )
        info = queue.get(bad)
        assert info is not None and "priority" in info.invalid
    _run_burst(env)
    assert 1 in ran
    assert queue.get(good) is None


def test_hand_written_row_with_bad_timestamp_is_shown_with_its_value(
    env: Env, app_ctx: None
) -> None:
    """Items 4 and 11, SQLite: a corrupt run_at is listed (with the bad value
    in ``invalid``) instead of breaking the listing."""
    if env.db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's timestamptz cannot hold a bad value")
    queue = env.queue

    @queue.task(name="t")
    def task() -> None:
        pass

    bad = queue.perform(task)
    with env.db.engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE {queue.Task.__table__.name} SET run_at = 'not a time'"
            f" WHERE id = {int(bad)}"
        )
    (info,) = queue.tasks()
    assert info.id == bad
    assert info.invalid["run_at"] == "not a time"
    assert queue.status().totals


# -- 5: a failure that cannot be written still counts ------------------------------


def test_undecodable_deep_data_ends_dead_without_rerunning(
    env: Env, app_ctx: None
) -> None:
    """Item 5: data nested too deep for the worker's decoder (written by hand)
    makes the task dead with a clear error, once, instead of re-running forever."""
    queue = env.queue
    ran: list[object] = []

    @queue.task(name="t", max_retries=5)
    def task(data: object) -> None:
        ran.append(data)

    task_id = queue.perform(task, "x")
    deep = "[" * 200_000 + "]" * 200_000
    with env.db.engine.begin() as conn:
        conn.execute(
            sa.update(queue.Task.__table__)
            .where(queue.Task.__table__.c.id == task_id)
            .values(data=deep)
        )
    assert queue.drain() == 1
    info = queue.get(task_id)
    assert info is not None and info.state is TaskState.DEAD
    assert "not valid JSON" in (info.error or "")
    assert ran == []
    assert queue.drain() == 0


def test_retry_with_the_longest_delay_is_recorded(env: Env, app_ctx: None) -> None:
    """Item 5: the longest allowed delays are written without overflow."""
    queue = env.queue

    @queue.task(name="t", retry_interval=100 * 365 * 86400.0, retry_backoff=100)
    def task() -> None:
        raise Retry(delay=100 * 365 * 86400.0)

    task_id = queue.perform(task)
    assert queue.drain() == 1
    info = queue.get(task_id)
    assert info is not None and info.state is TaskState.SCHEDULED
    assert info.run_at > utcnow() + datetime.timedelta(days=365 * 99)


def test_attempts_count_even_when_the_failure_callback_breaks_everything(
    env: Env, app_ctx: None
) -> None:
    """Item 5: whatever goes wrong while working out an outcome, max_retries
    holds: the task ends dead after max_retries + 1 attempts."""
    queue = env.queue
    attempts: list[int] = []

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no message")

    @queue.task(name="t", max_retries=2, retry_interval=0, failure=lambda d, e: 1 / 0)
    def task() -> None:
        attempts.append(1)
        raise Unprintable

    task_id = queue.perform(task)
    for _ in range(5):
        queue.drain()
    info = queue.get(task_id)
    assert info is not None and info.state is TaskState.DEAD
    assert len(attempts) == 3


# -- 6: perform arguments -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"delay": float("nan")}, "delay"),
        ({"delay": float("inf")}, "delay"),
        ({"delay": -1}, "delay"),
        ({"delay": 1e12}, "delay"),
        ({"priority": 2**31}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"unique_key": "k" * 256}, "unique_key"),
        ({"unique_key": "a\x00b"}, "unique_key"),
        ({"unique_key": 5}, "unique_key"),
        ({"unique_key": "\ud800"}, "unique_key"),
        (
            {"run_at": datetime.datetime.max.replace(tzinfo=datetime.timezone.utc)},
            "run_at",
        ),
        ({"run_at": datetime.datetime(2030, 1, 1)}, "run_at"),
        ({"delay": 1, "run_at": utcnow()}, "delay|run_at"),
        ({"commit": "yes"}, "commit"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_bad_perform_argument_is_named_and_leaves_pending_work_alone(
    env: Env, app_ctx: None, kwargs: dict[str, t.Any], named: str
) -> None:
    """Item 6: the error names the argument; nothing is written, and the
    caller's own pending work is neither rolled back nor committed."""
    queue, db = env.queue, env.db

    @queue.task(name="t")
    def task() -> None:
        pass

    pending = queue.Task(
        name="pending", created=utcnow(), run_at=utcnow(), data=json.dumps(None)
    )
    db.session.add(pending)
    db.session.flush()
    with pytest.raises(InvalidArgument, match=named):
        queue.perform(task, **kwargs)
    assert pending in db.session
    assert db.session.scalar(sa.select(sa.func.count()).select_from(queue.Task)) == 1
    db.session.rollback()
    assert queue.count() == 0


@pytest.mark.parametrize("task_id", [2**70, -(2**70), 2**63, 0, -1])
def test_retry_and_cancel_of_an_impossible_id_return_false(
    env: Env, app_ctx: None, task_id: int
) -> None:
    """Item 6: ids that fit no column are simply not there."""
    assert env.queue.retry(task_id) is False
    assert env.queue.cancel(task_id) is False
    assert env.queue.get(task_id) is None


@pytest.mark.parametrize("task_id", ["1", 1.0, None, True])
def test_ids_must_be_ints(env: Env, app_ctx: None, task_id: object) -> None:
    with pytest.raises(InvalidArgument, match="task_id"):
        env.queue.get(task_id)  # type: ignore[arg-type]


def test_bad_item_in_perform_many_writes_nothing(env: Env, app_ctx: None) -> None:
    queue = env.queue

    @queue.task(name="t")
    def task(data: object) -> None:
        pass

    with pytest.raises(TaskDataError, match="surrogate"):
        queue.perform_many(task, ["ok", "\ud800"])
    assert queue.count() == 0


# -- 8: data that cannot be stored is refused on both databases ---------------------


@pytest.mark.parametrize("data", ["\ud800", {"a\x00": 1}, "nul \x00 inside"])
def test_data_every_database_stores_round_trips_or_is_refused(
    env: Env, app_ctx: None, data: t.Any
) -> None:
    """Item 8: a lone surrogate is refused with TaskDataError on both databases;
    a NUL (which PostgreSQL's jsonb/text cannot hold raw) round-trips as JSON's
    escape."""
    queue = env.queue
    seen: list[object] = []

    @queue.task(name="t")
    def task(data: object) -> None:
        seen.append(data)

    if isinstance(data, str) and "\ud800" in data:
        with pytest.raises(TaskDataError):
            queue.perform(task, data)
        assert queue.count() == 0
        return
    queue.perform(task, data)
    assert queue.drain() == 1
    assert seen == [data]


# -- 9: one exception type for one failure ------------------------------------------


def test_database_errors_from_perform_are_sqlalchemy_errors_on_every_path(
    env: Env, app_ctx: None
) -> None:
    """Item 9: a missing table (a database error) is the same SQLAlchemy error
    whether perform commits (the fast path on SQLite) or joins the session."""
    queue, db = env.queue, env.db

    @queue.task(name="t")
    def task() -> None:
        pass

    db.session.remove()
    queue.Task.__table__.drop(db.engine)
    for commit in (True, False):
        with pytest.raises(sa.exc.DBAPIError):
            queue.perform(task, commit=commit)
        db.session.rollback()
    queue.Task.__table__.create(db.engine)


# -- 10: the documented explicit table name ---------------------------------------


def test_table_given_to_the_constructor_works_with_init_app(
    database_uri: str, tmp_path: t.Any
) -> None:
    """Item 10: PlainQueue(db=db, table="jobs") then init_app(app)."""
    from flask import Flask

    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_uri
    db = SQLAlchemy()
    db.init_app(app)
    queue = PlainQueue(db=db, table="jobs")
    queue.init_app(app)

    @queue.task(name="t")
    def task() -> None:
        pass

    with app.app_context():
        db.create_all()
        queue.perform(task)
        assert queue.Task.__table__.name == "jobs"
        assert sa.inspect(db.engine).has_table("jobs")
        assert queue.drain() == 1
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


# -- 12 and 13: atomic tasks -------------------------------------------------------


def test_perform_inside_an_atomic_task_joins_its_transaction(
    env: Env, app_ctx: None
) -> None:
    """Item 12: a task enqueued by an atomic task that then fails is rolled
    back with the task's own writes."""
    queue = env.queue
    if env.db.engine.dialect.name == "sqlite":
        pass  # atomic works on SQLite; only atomic + timeout is refused

    @queue.task(name="child")
    def child() -> None:
        pass

    @queue.task(name="parent", atomic=True, max_retries=0)
    def parent() -> None:
        queue.perform(child)  # commit=True by default, but it must join
        raise RuntimeError("after the perform")

    queue.perform(parent)
    assert queue.drain() == 1
    assert queue.count(name="child") == 0
    assert queue.count(name="parent", state=TaskState.DEAD) == 1


def test_perform_inside_a_successful_atomic_task_commits_with_it(
    env: Env, app_ctx: None
) -> None:
    queue = env.queue

    @queue.task(name="child")
    def child() -> None:
        pass

    @queue.task(name="parent", atomic=True)
    def parent() -> None:
        queue.perform(child)

    queue.perform(parent)
    assert queue.drain() == 2
    assert queue.count() == 0


def test_atomic_with_timeout_is_refused_on_sqlite(env: Env, app_ctx: None) -> None:
    """Item 13: on SQLite a stuck atomic task would hold the write lock, so the
    combination is refused when the definition meets the database."""
    queue = env.queue
    if env.db.engine.dialect.name != "sqlite":
        definition = queue.task(name="t", atomic=True, timeout=5)(lambda: None)
        assert definition.options.timeout == 5
        return
    with pytest.raises(ConfigurationError, match="atomic"):
        queue.task(name="t", atomic=True, timeout=5)(lambda: None)


# -- 14: a deduplicated unique task is not a new task ------------------------------


def test_deduplicated_unique_task_is_reported_and_signalled_once(
    env: Env, app_ctx: None
) -> None:
    queue = env.queue
    enqueued: list[object] = []

    @queue.task(name="t")
    def task() -> None:
        pass

    def receiver(sender: object, **kwargs: object) -> None:
        enqueued.append(kwargs["task_id"])

    with signals.task_enqueued.connected_to(receiver):
        first = queue.perform(task, unique_key="k")
        second = queue.perform(task, unique_key="k")
    assert first == second
    assert first.new is True and second.new is False
    assert enqueued == [first]
    assert isinstance(enqueued[0], int)


def test_eager_mode_respects_run_at_of_an_existing_unique_task(
    database_uri: str, tmp_path: t.Any
) -> None:
    """Item 14: in eager mode a deduplicated delayed task does not run at once;
    only due tasks run eagerly."""
    app, db, queue = create_test_app(
        database_uri, tmp_path / "instance", PLAINQUEUE_EAGER=True
    )
    ran: list[str] = []

    @queue.task(name="t")
    def task() -> None:
        ran.append("ran")

    with app.app_context():
        db.create_all()
        queue.perform(task, unique_key="k", delay=3600)
        queue.perform(task, unique_key="k")
        assert ran == []
        queue.perform(task)
        assert ran == ["ran"]
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


# -- 17: the connection pool is checked against concurrency --------------------------


def test_concurrency_larger_than_the_pool_is_refused_at_start(
    database_uri: str, tmp_path: t.Any
) -> None:
    app, db, queue = create_test_app(
        database_uri,
        tmp_path / "instance",
        PLAINQUEUE_CONCURRENCY=64,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 2, "max_overflow": 0},
    )
    with app.app_context():
        db.create_all()
        with pytest.raises(ConfigurationError, match="PLAINQUEUE_CONCURRENCY"):
            queue.start_worker(app, force=True)
        assert queue.embedded_worker(app) is None
        db.drop_all()
        db.engine.dispose()


def test_idle_sqlite_worker_leaves_connections_for_the_app(
    env: Env, app_ctx: None
) -> None:
    """Item 17: an idle concurrency=8 worker leaves the default pool enough
    connections for the app's perform()."""
    queue = env.queue

    @queue.task(name="t")
    def task() -> None:
        pass

    worker = queue.worker(env.app, concurrency=8)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        for _ in range(20):
            queue.perform(task)
        done = threading.Event()

        def drained() -> bool:
            return queue.count() == 0

        for _ in range(600):
            if drained():
                done.set()
                break
            threading.Event().wait(0.1)
        assert done.is_set()
    finally:
        worker.stop(grace=10)
        thread.join(60)
    assert not thread.is_alive()


# -- 19: the smaller items ------------------------------------------------------------


def test_many_registered_task_names_do_not_break_claims(
    env: Env, app_ctx: None
) -> None:
    """Item 19: SQLite refused a claim with more than 500 names registered."""
    queue = env.queue
    ran: list[int] = []
    for i in range(600):
        queue.task(name=f"task_{i}")(lambda data, i=i: ran.append(i))
    queue.perform("task_599", None)
    queue.perform("task_0", None)
    assert queue.drain() == 2
    assert sorted(ran) == [0, 599]


def test_import_tasks_leaves_the_callers_session_alone(env: Env, app_ctx: None) -> None:
    """Item 19: import runs in a transaction of its own; the caller's pending
    work is neither committed nor rolled back."""
    import io

    queue, db = env.queue, env.db

    @queue.task(name="t")
    def task(data: object) -> None:
        pass

    queue.perform(task, 1)
    out = io.StringIO()
    queue.export_tasks(out)
    queue.cancel(queue.tasks()[0].id)

    class Note(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "trust_note"
        id: Mapped[int] = mapped_column(primary_key=True)

    Note.__table__.create(db.engine)
    try:
        db.session.add(Note(id=1))
        if db.engine.dialect.name != "sqlite":
            # On SQLite a flush takes the write lock, which a second transaction
            # (the import's) would wait for: commit first there, as for any write.
            db.session.flush()
        queue.import_tasks(out.getvalue().splitlines())
        db.session.rollback()
        assert db.session.get(Note, 1) is None
        assert queue.count(name="t") == 1
    finally:
        db.session.rollback()
        Note.__table__.drop(db.engine)
        db.metadata.remove(Note.__table__)


def test_a_bad_receiver_of_task_enqueued_does_not_undo_the_enqueue(
    env: Env, app_ctx: None, caplog: pytest.LogCaptureFixture
) -> None:
    queue = env.queue

    @queue.task(name="t")
    def task() -> None:
        pass

    def receiver(sender: object, **kwargs: object) -> None:
        raise RuntimeError("receiver bug")

    with signals.task_enqueued.connected_to(receiver), caplog.at_level(logging.ERROR):
        task_id = queue.perform(task)
    assert queue.get(task_id) is not None
    assert "receiver" in caplog.text
