"""Enqueueing and claiming against the real database (SQLite file and PostgreSQL)."""

from __future__ import annotations

import datetime
import json
import threading
import typing as t

import pytest
import sqlalchemy as sa
from conftest import Env
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_plainqueue.storage import Outcomes

UTC = datetime.timezone.utc


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
    task_id = env.queue.perform(noop, {"email": "a@example.com"})
    assert isinstance(task_id, str)
    # Visible from another connection: it was committed.
    with env.db.engine.connect() as conn:
        row = conn.execute(sa.select(env.queue.Task.__table__)).one()
    assert str(row.id) == task_id
    assert row.name == "noop"
    assert row.status == "queued"
    assert row.failed_nr == 0
    assert row.created.tzinfo is not None


@pytest.mark.usefixtures("app_ctx")
def test_definition_perform_is_the_same(env: Env, noop: t.Any) -> None:
    task_id = noop.perform([1, 2])
    (row,) = _rows(env)
    assert str(row.id) == task_id
    assert json.loads(row.data) == [1, 2]


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
    assert (str(data[0][0]), json.loads(data[0][1])) == (task_id, 1)
    assert [json.loads(d) for _, d in data] == [1, 2, 3]


@pytest.mark.usefixtures("app_ctx")
@pytest.mark.parametrize(
    "bad", [object(), {"when": datetime.datetime.now()}, float("nan")]
)
def test_non_json_data_is_a_type_error_and_writes_nothing(
    env: Env, noop: t.Any, bad: t.Any
) -> None:
    with pytest.raises(TypeError, match="noop"):
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
    rows = _rows(env)
    assert [str(r.id) for r in rows] == ids
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
        env.queue.perform(noop, unique_key=42)  # type: ignore[arg-type]
    assert _rows(env) == []


def _storage(env: Env) -> t.Any:
    return env.queue._state(env.app).storage


def _claim(env: Env, owner: str, now: datetime.datetime, **kw: t.Any) -> list[t.Any]:
    return _storage(env).claim(  # type: ignore[no-any-return]
        owner=owner,
        names=kw.pop("names", ["noop"]),
        batch_sizes=kw.pop("batch_sizes", {"noop": 3, "other": 2}),
        now=now,
        until=now + datetime.timedelta(seconds=30),
        **kw,
    )


@pytest.mark.usefixtures("app_ctx")
def test_claim_takes_a_batch_in_order_and_leases_it(env: Env, noop: t.Any) -> None:
    ids = [int(env.queue.perform(noop, i)) for i in range(5)]
    urgent = int(env.queue.perform(noop, "urgent", priority=10))
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
    _storage(env).settle("w1", outcomes, later)
    assert len(_rows(env)) == 6


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
    first = int(env.queue.perform(noop, 1, delay=60))
    run_at = datetime.datetime.now(UTC) + datetime.timedelta(seconds=120)
    second = int(env.queue.perform(noop, 2, run_at=run_at))
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
    assert env.queue.perform(noop, 2, unique_key="user:42") == first
    other = env.queue.perform(noop, 3, unique_key="user:43")
    assert other != first
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


def test_claim_and_prune_use_indexes_not_scans(
    sqlite_uri: str, tmp_path: t.Any
) -> None:
    """The claim's cost must not grow with the number of waiting or dead tasks:
    SQLite's plan for each statement is an index search in claim order, never a
    table scan or a sort."""
    from conftest import create_test_app
    from sqlalchemy import event

    app, db, queue = create_test_app(sqlite_uri, tmp_path / "i")

    @queue.task(name="a")
    def a(data: t.Any) -> None:
        pass

    @queue.task(name="b")
    def b(data: t.Any) -> None:
        pass

    with app.app_context():
        db.create_all()
        queue.perform_many(a, list(range(50)))
        queue.perform_many(b, list(range(50)))
        storage = queue._state(app).storage
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

        event.listen(storage.engine, "before_cursor_execute", grab)
        try:
            now = datetime.datetime.now(UTC)
            kw: dict[str, t.Any] = {
                "owner": "w",
                "names": ["a", "b"],
                "batch_sizes": {"a": 5, "b": 5},
                "now": now,
                "until": now,
            }
            first = storage.claim(**kw)
            done = Outcomes(completed=[(c.id, c.attempts) for c in first])
            storage.claim(**kw, outcomes=done)
            storage.prune(now)
        finally:
            event.remove(storage.engine, "before_cursor_execute", grab)
        # The claim runs on the driver's cursor, past SQLAlchemy's events.
        assert storage.hot is not None
        statements.update(
            c.sql for c in storage.hot._cache.values() if not c.sql.startswith("INSERT")
        )
        assert len(statements) == 4  # head, claim, delete finished, prune
        with storage.engine.connect() as conn:
            for statement in statements:
                args = (None,) * statement.count("?")
                plan = [
                    row[-1]
                    for row in conn.exec_driver_sql(
                        "EXPLAIN QUERY PLAN " + statement, args
                    )
                ]
                assert not any(p.startswith("SCAN plainqueue_tasks") for p in plan), (
                    statement,
                    plan,
                )
                assert not any("TEMP B-TREE" in p for p in plan), (statement, plan)
        db.drop_all()


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2026, 11, 28, 8, 6, 15, 123456, tzinfo=UTC),
        datetime.datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime.datetime(
            2026, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
        ),
    ],
)
def test_hot_path_timestamps_match_sqlalchemys(value: datetime.datetime) -> None:
    """The SQLite hot path writes timestamps itself; they must be the very text
    SQLAlchemy writes, or comparisons between the two would go wrong."""
    from sqlalchemy.dialects import sqlite

    from flask_plainqueue.models import UTCDateTime
    from flask_plainqueue.sqlite import utc_text

    dialect = sqlite.dialect()
    processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    assert utc_text(value) == processor(value)
    with pytest.raises(ValueError, match="naive"):
        utc_text(value.replace(tzinfo=None))
