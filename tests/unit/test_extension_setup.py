"""Registering the extension, and the errors that name the fix: no database
is opened (the app's SQLite URI names a file that is never created). What needs
the database is in ``tests/integration/test_extension.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import create_test_app
from conftest import Env
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue


@pytest.fixture
def unopened(tmp_path: Path) -> Iterator[Env]:
    """An app, db and queue on a SQLite file that must never be opened."""
    path = tmp_path / "never.db"
    app, db, queue = create_test_app(f"sqlite:///{path}", tmp_path / "instance")
    yield Env(app, db, queue)
    assert not path.exists(), "a unit test opened the database"


def test_init_app_registers_one_extension_key(unopened: Env) -> None:
    assert unopened.app.extensions["plainqueue"] is unopened.queue
    assert "queue" in unopened.app.cli.commands


def test_second_init_app_is_refused(unopened: Env) -> None:
    with pytest.raises(RuntimeError, match="already been registered"):
        unopened.queue.init_app(unopened.app)


def test_constructor_with_app_and_db(tmp_path: Path) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'never.db'}"
    db = SQLAlchemy(app)
    queue = PlainQueue(app, db)
    assert app.extensions["plainqueue"] is queue
    assert queue.db is db
    assert not (tmp_path / "never.db").exists()


def test_init_app_without_flask_sqlalchemy_names_the_fix(tmp_path: Path) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    with pytest.raises(RuntimeError, match=r"db.init_app\(app\)"):
        PlainQueue().init_app(app)


def test_task_model_before_init_app_names_the_fix() -> None:
    with pytest.raises(RuntimeError, match="init_app"):
        PlainQueue().Task  # noqa: B018


def test_queue_table_is_on_db_metadata(unopened: Env) -> None:
    assert (
        unopened.queue.Task.__table__ is unopened.db.metadata.tables["plainqueue_tasks"]
    )


def test_perform_outside_app_context_names_the_fix(unopened: Env) -> None:
    @unopened.queue.task
    def noop(data: object) -> None:
        pass

    with pytest.raises(RuntimeError, match="app_context"):
        unopened.queue.perform(noop)


def test_unregistered_app_names_the_fix(unopened: Env, tmp_path: Path) -> None:
    other = Flask(__name__, instance_path=str(tmp_path / "other"))

    @unopened.queue.task
    def noop(data: object) -> None:
        pass

    with other.app_context(), pytest.raises(RuntimeError, match="init_app"):
        unopened.queue.perform(noop)


def test_store_and_settings_are_the_apps(unopened: Env, tmp_path: Path) -> None:
    """``queue.store()`` and ``queue.settings()`` take the app, or the current
    one, and name the fix without one."""
    queue, app = unopened.queue, unopened.app
    with app.app_context():
        assert queue.store() is queue.store(app)
        assert queue.settings() is queue.settings(app)
        assert queue.store().table is queue.Task.__table__
    assert queue.settings(app).lease_seconds == 30
    with pytest.raises(RuntimeError, match="app_context"):
        queue.store()
    other = Flask(__name__, instance_path=str(tmp_path / "other"))
    with pytest.raises(RuntimeError, match="init_app"):
        queue.settings(other)
    assert queue.embedded_worker(app) is None
    queue.wake_workers(app)  # no worker: nothing to do
