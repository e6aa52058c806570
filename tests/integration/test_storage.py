"""Enqueueing and claiming against the real database (SQLite file and PostgreSQL),
through ``perform`` and the storage layer (``queue.store()``)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import threading
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from conftest import Env
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_plainqueue import InvalidArgument
from flask_plainqueue import signals
from flask_plainqueue import TaskDataError
from flask_plainqueue import TaskId
from flask_plainqueue import TaskInfo
from flask_plainqueue.claims import claimed
from flask_plainqueue.claims import ClaimedTask
from flask_plainqueue.claims import ClaimRequest
from flask_plainqueue.claims import Failure
from flask_plainqueue.claims import Kept
from flask_plainqueue.claims import Outcomes

UTC = datetime.timezone.utc
#: How SQLAlchemy stores a ``DateTime`` in SQLite (always UTC here).
SQLITE_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


def _rows(env: Env) -> list[t.Any]:
    return list(env.db.session.scalars(sa.select(env.queue.Task).order_by("id")))


@pytest.fixture
def noop(env: Env) -> t.Any:
    @env.queue.task(name="noop", batch_size=3)
    def noop(data: t.Any) -> None:
        pass

    return noop


@pytest.mark.usefixtures("app_ctx")
def test_perform_commits_and_returns_the_id(env: Env, noop: t.Any) -> None:
    # The queue's clock (the database server's on PostgreSQL, read now and then
    # and carried forward: within a round trip of this host's).
    clock = env.queue.store().clock
    slack = datetime.timedelta(seconds=1)
    before = clock()
    task_id = env.queue.perform(noop, {"email": "a@example.com"})
    after = clock()
    assert isinstance(task_id, TaskId) and isinstance(task_id, int)
    assert task_id.new
    # Visible from another connection: it was committed.
    with env.db.engine.connect() as conn:
        row = conn.execute(sa.select(env.queue.Task.__table__)).one()
    assert row.id == task_id
    assert row.name == "noop"
    assert row.status == "queued"
    assert row.failed_nr == 0
    # Read through the public API, timestamps are aware UTC on every database.
    info = env.queue.get(task_id)
    assert info is not None
    assert info.created.tzinfo is not None
    assert info.created.utcoffset() == datetime.timedelta(0)
    assert before - slack <= info.created <= after + slack
    assert abs(info.created - datetime.datetime.now(UTC)) < datetime.timedelta(
        seconds=60
    )


@pytest.mark.usefixtures("app_ctx")
def test_definition_perform_is_the_same(env: Env, noop: t.Any) -> None:
    task_id = noop.perform([1, 2])
    (row,) = _rows(env)
    assert row.id == task_id
    assert json.loads(row.data) == [1, 2]


@pytest.mark.usefixtures("app_ctx")
def test_ids_are_ints_equal_to_the_stored_rows(env: Env, noop: t.Any) -> None:
    """``perform`` returns an ``int`` equal to ``queue.Task.id`` of the stored row
    (whichever way it was inserted), and ``TaskInfo.id`` and the signals' ``task_id``
    are that ``int`` too."""
    enqueued: list[t.Any] = []
    lifecycle: list[t.Any] = []

    def on_enqueued(sender: object, **kwargs: t.Any) -> None:
        enqueued.append(kwargs["task_id"])

    def on_run(sender: object, **kwargs: t.Any) -> None:
        lifecycle.append(kwargs["task_id"])

    signals.task_enqueued.connect(on_enqueued, env.app, weak=False)
    signals.task_started.connect(on_run, env.app, weak=False)
    signals.task_succeeded.connect(on_run, env.app, weak=False)
    try:
        # Committed on its own (SQLite: the driver's cursor), joined to the
        # caller's transaction, unique (new, then existing), and many at once.
        committed = env.queue.perform(noop, 1)
        joined = env.queue.perform(noop, 2, commit=False)
        env.db.session.commit()
        unique = env.queue.perform(noop, 3, unique_key="k")
        again = env.queue.perform(noop, 4, unique_key="k")
        many = env.queue.perform_many(noop, [5, 6])
        ids = [committed, joined, unique, *many]
        for task_id in [*ids, again]:
            assert isinstance(task_id, int) and not isinstance(task_id, bool)
        for task_id in (committed, joined, unique, again):
            assert type(task_id) is TaskId
        assert (unique.new, again.new) == (True, False)
        assert again == unique
        stored = env.db.session.scalars(
            sa.select(env.queue.Task.id).order_by(env.queue.Task.id)
        ).all()
        assert list(stored) == ids
        assert all(type(i) is int for i in stored)
        for task_id in ids:
            info = env.queue.get(task_id)
            assert isinstance(info, TaskInfo)
            assert type(info.id) is int and info.id == task_id
        listed = env.queue.tasks(limit=10)
        assert sorted(info.id for info in listed) == ids
        assert all(type(info.id) is int for info in listed)
        assert env.queue.drain() == len(ids)
    finally:
        signals.task_enqueued.disconnect(on_enqueued)
        signals.task_started.disconnect(on_run)
        signals.task_succeeded.disconnect(on_run)
    # A unique task that already waits is not enqueued again: no signal.
    assert enqueued == ids
    assert all(isinstance(i, int) for i in enqueued)
    assert sorted(lifecycle) == sorted(ids * 2)
    assert all(type(i) is int for i in lifecycle)


@pytest.mark.usefixtures("app_ctx")
def test_commit_false_joins_the_callers_transaction(env: Env, noop: t.Any) -> None:
    class Note(env.db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "note"
        id: Mapped[int] = mapped_column(primary_key=True)

    env.db.create_all()
    env.db.session.add(Note(id=1))
    env.queue.perform(noop, 1, commit=False)
    env.db.session.rollback()
    assert _rows(env) == []
    assert env.db.session.get(Note, 1) is None

    env.db.session.add(Note(id=2))
    env.queue.perform(noop, 2, commit=False)
    env.db.session.commit()
    assert [json.loads(r.data) for r in _rows(env)] == [2]
    assert env.db.session.get(Note, 2) is not None


@pytest.mark.usefixtures("app_ctx")
def test_commit_true_commits_the_callers_pending_work_with_the_task(
    env: Env, noop: t.Any
) -> None:
    class Note(env.db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "note"
        id: Mapped[int] = mapped_column(primary_key=True)

    env.db.create_all()
    commits: list[int] = []

    def count(conn: t.Any) -> None:
        commits.append(1)

    sa.event.listen(env.db.engine, "commit", count)
    try:
        env.db.session.add(Note(id=7))
        task_id = env.queue.perform(noop, 1)
        # Pending work: one transaction for both.
        assert len(commits) == 1
        # Nothing pending: a transaction of its own (SQLite: the driver's cursor).
        env.queue.perform_many(noop, [2, 3])
    finally:
        sa.event.remove(env.db.engine, "commit", count)
    with env.db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM note")).scalars().all() == [7]
        table = env.queue.Task.__table__
        data = conn.execute(
            sa.select(table.c.id, table.c.data).order_by(table.c.id)
        ).all()
    assert (data[0][0], json.loads(data[0][1])) == (task_id, 1)
    assert [json.loads(d) for _, d in data] == [1, 2, 3]


@pytest.mark.usefixtures("app_ctx")
@pytest.mark.parametrize(
    "bad", [object(), {"when": datetime.datetime.now()}, float("nan")]
)
def test_non_json_data_is_a_type_error_and_writes_nothing(
    env: Env, noop: t.Any, bad: t.Any
) -> None:
    with pytest.raises(TaskDataError, match="noop"):
        env.queue.perform(noop, bad)
    with pytest.raises(TypeError, match="noop"):
        env.queue.perform(noop, bad, commit=False)
    with pytest.raises(TypeError):
        env.queue.perform_many(noop, [1, 2, bad])
    env.db.session.commit()
    assert _rows(env) == []


@pytest.mark.usefixtures("app_ctx")
def test_perform_many_in_one_transaction(env: Env, noop: t.Any) -> None:
    ids = env.queue.perform_many(noop, [{"n": i} for i in range(250)])
    assert len(ids) == 250 == len(set(ids))
    assert all(type(i) is int for i in ids)
    rows = _rows(env)
    assert [r.id for r in rows] == ids
    assert [json.loads(r.data) for r in rows[:2]] == [{"n": 0}, {"n": 1}]
    assert env.queue.perform_many(noop, []) == []

    env.queue.perform_many(noop, [1, 2], commit=False)
    env.db.session.rollback()
    assert len(_rows(env)) == 250


@pytest.mark.usefixtures("app_ctx")
def test_bad_scheduling_arguments(env: Env, noop: t.Any) -> None:
    with pytest.raises(ValueError, match="delay"):
        env.queue.perform(noop, delay=-1)
    with pytest.raises(ValueError, match="naive"):
        env.queue.perform(noop, run_at=datetime.datetime(2030, 1, 1))
    with pytest.raises(TypeError, match="unique_key"):
        env.queue.perform(noop, unique_key=42)  # type: ignore[call-overload]
    with pytest.raises(InvalidArgument, match="delay"):
        env.queue.perform(noop, delay=-1, commit=False)
    assert _rows(env) == []


@pytest.mark.usefixtures("app_ctx")
def test_datetimes_round_trip_as_aware_utc(env: Env, noop: t.Any) -> None:
    """A ``run_at`` in any timezone is stored as the same instant and read back
    timezone-aware in UTC, whichever way the row was inserted."""
    run_at = (datetime.datetime.now(UTC) + datetime.timedelta(hours=2)).replace(
        microsecond=123456
    )
    eastern = run_at.astimezone(datetime.timezone(datetime.timedelta(hours=-5)))
    east = run_at.astimezone(datetime.timezone(datetime.timedelta(hours=9)))
    first = env.queue.perform(noop, 1, run_at=eastern)
    second = env.queue.perform(noop, 2, run_at=east, commit=False)
    env.db.session.commit()
    third = env.queue.perform(noop, 3, delay=datetime.timedelta(hours=3))
    for task_id in (first, second):
        info = env.queue.get(task_id)
        assert info is not None
        assert info.run_at == run_at
        assert info.run_at.utcoffset() == datetime.timedelta(0)
        assert info.created.utcoffset() == datetime.timedelta(0)
    info = env.queue.get(third)
    assert info is not None
    assert info.run_at.utcoffset() == datetime.timedelta(0)
    assert info.run_at - info.created == datetime.timedelta(hours=3)
    # Scheduled until then, by the same instant on every database.
    assert env.queue.count(state="scheduled") == 3  # type: ignore[arg-type]
    claim_time = run_at + datetime.timedelta(microseconds=1)
    assert sorted(c.id for c in _claim(env, "w", claim_time)) == [first, second]
    if env.db.engine.dialect.name == "sqlite":
        # One text format in the file, so SQLite compares instants correctly.
        with env.db.engine.connect() as conn:
            stored = conn.exec_driver_sql(
                "SELECT created, run_at FROM plainqueue_tasks"
            ).all()
        for value in (v for row in stored for v in row):
            assert isinstance(value, str) and SQLITE_TIMESTAMP.match(value), value


def _claim(
    env: Env,
    owner: str,
    now: datetime.datetime,
    *,
    names: t.Sequence[str] = ("noop",),
    batch_sizes: t.Mapping[str, int] | None = None,
    queues: t.Sequence[str] | None = None,
    outcomes: Outcomes | None = None,
) -> list[ClaimedTask]:
    request = ClaimRequest(
        owner=owner,
        names=list(names),
        batch_sizes=batch_sizes or {"noop": 3, "other": 2},
        now=now,
        until=now + datetime.timedelta(seconds=30),
        queues=queues,
    )
    return env.queue.store(env.app).claim(request, outcomes)


@pytest.mark.usefixtures("app_ctx")
def test_claim_takes_a_batch_in_order_and_leases_it(env: Env, noop: t.Any) -> None:
    ids = [env.queue.perform(noop, i) for i in range(5)]
    urgent = env.queue.perform(noop, "urgent", priority=10)
    now = datetime.datetime.now(UTC)
    first = _claim(env, "w1", now)
    assert [c.id for c in first] == [urgent, ids[0], ids[1]]
    assert all(c.attempts == 1 for c in first)
    second = _claim(env, "w2", now)
    assert [c.id for c in second] == ids[2:5]
    assert _claim(env, "w3", now) == []
    # A lease that ran out makes the rows due again for anyone.
    later = now + datetime.timedelta(seconds=31)
    third = _claim(env, "w3", later)
    assert [c.id for c in third] == [urgent, ids[0], ids[1]]
    assert all(c.attempts == 2 for c in third)
    # The first owner no longer holds them: its completion is ignored.
    outcomes = Outcomes(completed=[(c.id, c.attempts) for c in first])
    env.queue.store(env.app).settle("w1", outcomes, later)
    assert len(_rows(env)) == 6


@pytest.mark.usefixtures("app_ctx")
def test_settle_deletes_only_the_attempts_it_holds(env: Env, noop: t.Any) -> None:
    """Completions are fenced by owner and attempt, whole batches at once (one
    set-based DELETE on PostgreSQL): an owner that claimed a task again after
    its own lease ran out cannot delete it with the older attempt."""
    ids = [env.queue.perform(noop, i) for i in range(3)]
    store = env.queue.store(env.app)
    now = datetime.datetime.now(UTC)
    first = _claim(env, "w1", now)
    again = _claim(env, "w1", now + datetime.timedelta(seconds=31))
    assert [c.id for c in again] == ids and all(c.attempts == 2 for c in again)
    stale = Outcomes(completed=[(c.id, c.attempts) for c in first])
    # Each settle says how many of its rows it still held (and wrote).
    assert store.settle("w1", stale, now) == 0
    assert [r.id for r in _rows(env)] == ids
    mixed = Outcomes(
        completed=[(ids[0], 2), (ids[1], 1), (ids[2], 2)]  # the middle one is old
    )
    assert store.settle("w1", mixed, now) == 2
    assert [r.id for r in _rows(env)] == [ids[1]]
    # not its task
    assert store.settle("w2", Outcomes(completed=[(ids[1], 2)]), now) == 0
    assert [r.id for r in _rows(env)] == [ids[1]]
    # Kept results and failures count too: the first of these two outcomes of
    # one attempt ends the lease, so the second finds the row no longer held.
    failed = Failure(ids[1], 2, "boom", now, False)
    kept = Kept(ids[1], 2, "null", now, now)
    assert store.settle("w1", Outcomes(failed=[failed], kept=[kept]), now) == 1


@pytest.mark.usefixtures("app_ctx")
def test_claim_picks_the_name_of_the_next_task(env: Env, noop: t.Any) -> None:
    @env.queue.task(name="other")
    def other(data: t.Any) -> None:
        pass

    env.queue.perform(other, 1)
    env.queue.perform(noop, 2)
    env.queue.perform(other, 3)
    now = datetime.datetime.now(UTC)
    names = ["noop", "other"]
    batch = _claim(env, "w", now, names=names)
    assert [c.name for c in batch] == ["other", "other"]
    assert [c.name for c in _claim(env, "w", now, names=names)] == ["noop"]


@pytest.mark.usefixtures("app_ctx")
def test_delayed_tasks_are_not_due_yet(env: Env, noop: t.Any) -> None:
    first = env.queue.perform(noop, 1, delay=60)
    run_at = datetime.datetime.now(UTC) + datetime.timedelta(seconds=120)
    second = env.queue.perform(noop, 2, run_at=run_at)
    now = datetime.datetime.now(UTC)
    assert _claim(env, "w", now) == []
    assert _claim(env, "w", now + datetime.timedelta(seconds=59)) == []
    assert [c.id for c in _claim(env, "w", now + datetime.timedelta(seconds=61))] == [
        first
    ]
    # By then the first one's lease (30 s) has run out as well.
    later = now + datetime.timedelta(seconds=121)
    assert sorted(c.id for c in _claim(env, "w2", later)) == [first, second]


@pytest.mark.usefixtures("app_ctx")
def test_unique_key_returns_the_waiting_task(env: Env, noop: t.Any) -> None:
    first = env.queue.perform(noop, 1, unique_key="user:42")
    second = env.queue.perform(noop, 2, unique_key="user:42")
    assert second == first and not second.new
    other = env.queue.perform(noop, 3, unique_key="user:43")
    assert other != first and other.new
    assert len(_rows(env)) == 2
    env.queue.drain()
    assert env.queue.perform(noop, 4, unique_key="user:42") != first


def test_concurrent_claims_never_share_a_row(env: Env, noop: t.Any) -> None:
    with env.app.app_context():
        env.queue.perform_many(noop, list(range(300)))
    seen: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer(owner: str) -> None:
        try:
            with env.app.app_context():
                while True:
                    batch = _claim(env, owner, datetime.datetime.now(UTC))
                    if not batch:
                        return
                    assert len(batch) <= 3
                    with lock:
                        seen.extend(c.id for c in batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert len(seen) == 300 == len(set(seen))


def _sqlite_app(sqlite_uri: str, tmp_path: Path) -> t.Any:
    app, db, queue = create_test_app(sqlite_uri, tmp_path / "i")

    @queue.task(name="a")
    def a(data: t.Any) -> None:
        pass

    @queue.task(name="b", queue="mail")
    def b(data: t.Any) -> None:
        pass

    return app, db, queue, a, b


def test_claim_and_prune_use_indexes_not_scans(sqlite_uri: str, tmp_path: Path) -> None:
    """The claim's cost must not grow with the number of waiting or dead tasks:
    SQLite's plan for each statement is an index search in claim order, never a
    table scan or a sort."""
    app, db, queue, a, b = _sqlite_app(sqlite_uri, tmp_path)
    with app.app_context():
        db.create_all()
        # A task of a name no worker here knows comes first: the first claim
        # then asks for the first task of each name it knows.
        early = datetime.datetime.now(UTC) - datetime.timedelta(minutes=1)
        db.session.execute(
            sa.insert(queue.Task),
            [
                {
                    "name": "elsewhere",
                    "queue": "default",
                    "priority": 0,
                    "data": "1",
                    "created": early,
                    "run_at": early,
                    "status": "queued",
                    "attempts": 0,
                    "failed_nr": 0,
                }
            ],
        )
        # Kept succeeded rows, first in claim order but for their status.
        db.session.execute(
            sa.insert(queue.Task),
            [
                {
                    "name": name,
                    "queue": "default",
                    "priority": 100,
                    "data": '"kept"',
                    "created": early,
                    "run_at": early,
                    "status": "succeeded",
                    "attempts": 1,
                    "failed_nr": 0,
                    "finished": early,
                }
                for name in ("a", "b")
                for _ in range(20)
            ],
        )
        db.session.commit()
        queue.perform_many(a, list(range(50)))
        queue.perform_many(b, list(range(50)))
        store = queue.store()
        statements: set[str] = set()

        def grab(
            conn: t.Any,
            cursor: t.Any,
            statement: str,
            parameters: t.Any,
            context: t.Any,
            executemany: bool,
        ) -> None:
            if "plainqueue_tasks" in statement:
                statements.add(statement)

        sa.event.listen(store.engine, "before_cursor_execute", grab)
        try:
            now = datetime.datetime.now(UTC)
            request = ClaimRequest(
                owner="w",
                names=["a", "b"],
                batch_sizes={"a": 5, "b": 5},
                now=now,
                until=now,
            )
            first = store.claim(request)
            assert first
            assert all(c.name in ("a", "b") and c.data != '"kept"' for c in first)
            done = Outcomes(completed=[(c.id, c.attempts) for c in first])
            second = store.claim(request, done)
            kept = Outcomes(
                kept=[Kept(c.id, c.attempts, "1", now, now) for c in second]
            )
            # A worker of one task name claims with a simpler statement.
            assert store.claim(dataclasses.replace(request, names=["b"]), kept)
            store.delete_dead(before=now)
            store.write_progress("w", first[0], "1")
            assert store.delete_expired(now) == 40 + len(second)
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", grab)
        # The claim runs on the driver's cursor, past SQLAlchemy's events.
        backend = t.cast(t.Any, store.backend)
        statements.update(
            sql for sql in backend.compiled_statements() if not sql.startswith("INSERT")
        )
        # The first due task, the two claims (the name worked out by the
        # statement, or given), the hand-back of expired leases, delete done,
        # keep done, prune dead, write progress, prune succeeded.
        assert len(statements) == 9, statements
        with store.engine.connect() as conn:
            for statement in statements:
                # The driver-cursor statements use named parameters (":now").
                args: t.Any = (
                    (None,) * statement.count("?")
                    if "?" in statement
                    else dict.fromkeys(re.findall(r":(\w+)", statement))
                )
                plan = {
                    row[0]: (row[1], row[-1])
                    for row in conn.exec_driver_sql(
                        "EXPLAIN QUERY PLAN " + statement, args
                    )
                }
                details = [detail for _, detail in plan.values()]
                assert not any(
                    d.startswith("SCAN plainqueue_tasks") for d in details
                ), (
                    statement,
                    details,
                )
                # The only sort allowed orders one head row per task name (the
                # names' JSON array), never rows of the table.
                for parent, detail in plan.values():
                    if "TEMP B-TREE" in detail:
                        siblings = [d for p, d in plan.values() if p == parent]
                        assert any(
                            d.startswith("SCAN names VIRTUAL TABLE") for d in siblings
                        ), (statement, details)
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def test_sqlite_fast_path_claims_what_the_general_path_claims(
    sqlite_uri: str, tmp_path: Path
) -> None:
    """On SQLite the claim and the plain enqueue run on the driver's cursor with
    timestamps written by the backend itself. They must claim the very rows, and
    write the very text, that the same statements run through SQLAlchemy do, or
    comparisons between rows written either way would go wrong."""
    app, db, queue, a, b = _sqlite_app(sqlite_uri, tmp_path)
    base = datetime.datetime.now(UTC).replace(microsecond=0)
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    with app.app_context():
        db.create_all()
        # Rows through the driver's cursor (commit, nothing pending) and through
        # the session (commit=False), interleaved: priorities, delays and
        # run_at in another timezone.
        for n in range(12):
            commit = n % 2 == 0
            task = a if n % 3 else b
            options: dict[str, t.Any] = {"priority": n % 4, "commit": commit}
            if n % 5 == 1:
                options["run_at"] = (base + datetime.timedelta(seconds=n)).astimezone(
                    plus2
                )
            elif n % 5 == 2:
                options["delay"] = n
            queue.perform(task, n, **options)
            if not commit:
                db.session.commit()
        db.session.remove()
        store = queue.store()

        def raw() -> list[tuple[t.Any, ...]]:
            with store.engine.connect() as conn:
                return list(
                    conn.exec_driver_sql(
                        "SELECT id, created, run_at, lease_owner, attempts"
                        " FROM plainqueue_tasks ORDER BY id"
                    ).all()
                )

        for _, created, run_at, _, _ in raw():
            assert SQLITE_TIMESTAMP.match(created) and SQLITE_TIMESTAMP.match(run_at)

        requests = [
            (["a", "b"], None, {"a": 2, "b": 3}, 0),
            (["a", "b"], None, {"a": 5, "b": 5}, 5),
            (["a"], None, {"a": 3}, 20),
            (["a", "b"], ["mail"], {"a": 3, "b": 1}, 20),
            (["a", "b"], ["default", "mail"], {"a": 4, "b": 4}, 3600),
        ]
        took = 0
        for names, queues, sizes, offset in requests:
            now = base + datetime.timedelta(seconds=offset)
            request = ClaimRequest(
                owner=f"w{offset}",
                names=names,
                batch_sizes=sizes,
                now=now,
                until=now + datetime.timedelta(seconds=30),
                queues=queues,
            )
            # The general path: the same statement through SQLAlchemy, rolled back.
            backend = t.cast(t.Any, store.backend)
            queue_count = None if queues is None else len(queues)
            with store.engine.connect() as conn:
                # Explicitly: the driver begins none before a "WITH ... UPDATE".
                backend.begin_write(conn)
                # Expired leases first, as a claim that sweeps does.
                conn.execute(store.statements.reclaim(), {"now": now})
                general = claimed(
                    conn.execute(
                        backend.claim_statement(queue_count, single=len(names) == 1),
                        backend.claim_values(request),
                    ).all()
                )
                written = conn.exec_driver_sql(
                    "SELECT id, created, run_at, lease_owner, attempts"
                    " FROM plainqueue_tasks ORDER BY id"
                ).all()
                conn.rollback()
            fast = store.claim(request)
            assert fast == general, (names, queues, offset)
            took += len(fast)
            assert raw() == [tuple(row) for row in written]
        assert took >= 8  # most of the rows were claimed along the way
        db.session.remove()
        db.drop_all()
        db.engine.dispose()
