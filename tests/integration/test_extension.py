"""The extension against the real database: finding ``db``, the table name,
several apps on one queue, SQLite's pragmas, and ``queue.Task`` as a model.
Registration without a database is in ``tests/unit/test_extension_setup.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from conftest import Env
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue


def test_db_is_found_on_the_app_when_omitted(sqlite_uri: str, tmp_path: Path) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["SQLALCHEMY_DATABASE_URI"] = sqlite_uri
    db = SQLAlchemy(app)
    queue = PlainQueue(app)
    assert queue.db is db
    with app.app_context():
        db.create_all()
        assert sa.inspect(db.engine).has_table("plainqueue_tasks")


def test_table_name_from_config(sqlite_uri: str, tmp_path: Path) -> None:
    app, db, queue = create_test_app(sqlite_uri, tmp_path, PLAINQUEUE_TABLE="jobs_q")
    assert queue.Task.__table__.name == "jobs_q"
    with app.app_context():
        db.create_all()
        assert sa.inspect(db.engine).has_table("jobs_q")


def test_two_apps_share_one_queue(tmp_path: Path) -> None:
    db = SQLAlchemy()
    queue = PlainQueue(db=db)
    seen: list[str] = []

    @queue.task
    def record(data: str) -> None:
        seen.append(data)

    apps = []
    for i in range(2):
        app = Flask(__name__, instance_path=str(tmp_path / str(i)))
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / f'{i}.db'}"
        db.init_app(app)
        queue.init_app(app)
        apps.append(app)
    for i, app in enumerate(apps):
        with app.app_context():
            db.create_all()
            queue.perform(record, f"app{i}")
    with apps[1].app_context():
        assert queue.drain() == 1
    assert seen == ["app1"]
    with apps[0].app_context():
        assert queue.drain() == 1
    assert seen == ["app1", "app0"]


@pytest.fixture
def sqlite_env(sqlite_uri: str, tmp_path: Path) -> Iterator[Env]:
    app, db, queue = create_test_app(sqlite_uri, tmp_path / "instance")
    yield Env(app, db, queue)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_sqlite_pragmas_are_set_on_the_app_engine(sqlite_env: Env) -> None:
    env = sqlite_env
    with env.app.app_context():
        with env.db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            # NORMAL is 1
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_synchronous_full_is_configurable(sqlite_uri: str, tmp_path: Path) -> None:
    app, db, queue = create_test_app(
        sqlite_uri, tmp_path, PLAINQUEUE_SQLITE_SYNCHRONOUS="full"
    )
    with app.app_context(), db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2


def test_app_sessions_keep_deferred_transactions(sqlite_env: Env) -> None:
    """The queue must not make every app transaction take the write lock."""
    env = sqlite_env
    with env.app.app_context():
        env.db.session.execute(sa.text("SELECT 1"))
        # A second connection can still write while the app session reads.
        with env.db.engine.connect() as other:
            other.exec_driver_sql("BEGIN IMMEDIATE")
            other.rollback()
        env.db.session.rollback()


def test_task_rows_can_be_built_through_the_orm(env: Env) -> None:
    """``queue.Task`` is a declarative model: rows can be built and added too
    (type checkers accept its keyword arguments)."""
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc)
    with env.app.app_context():
        env.db.session.add(
            env.queue.Task(name="orm.made", data="1", created=now, run_at=now)
        )
        env.db.session.commit()
        (row,) = env.db.session.scalars(sa.select(env.queue.Task)).all()
        assert (row.name, row.status, row.failed_nr) == ("orm.made", "queued", 0)
        info = env.queue.get(row.id)
        assert info is not None
        assert (info.id, info.name, info.created) == (row.id, "orm.made", now)
