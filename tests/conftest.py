from __future__ import annotations

import os
import typing as t
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue

#: Where the PostgreSQL tests connect; unset means they skip.
POSTGRESQL_URL = os.environ.get("TEST_POSTGRESQL_URL")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("FLASK_", "PLAINQUEUE_")) or key == "WERKZEUG_RUN_MAIN":
            monkeypatch.delenv(key)


def _postgresql_uri() -> str:
    if not POSTGRESQL_URL:
        pytest.skip("TEST_POSTGRESQL_URL is not set")
    return POSTGRESQL_URL


@pytest.fixture
def postgresql_uri() -> Iterator[str]:
    """``TEST_POSTGRESQL_URL`` pointed at a fresh schema of its own (through the
    connection's ``search_path``), dropped with everything in it afterwards: tests
    and concurrent test runs never see each other's tables, and the database is
    left as it was. Skips when ``TEST_POSTGRESQL_URL`` is unset."""
    import sqlalchemy as sa

    base = sa.make_url(_postgresql_uri())
    schema = f"pq_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    # application_name marks this test's connections, so teardown can end those
    # a failed test left open (they would hold locks on the schema's tables).
    url = base.update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": schema}
    )
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %(name)s AND pid <> pg_backend_pid()",
                {"name": schema},
            )
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]
)
def database_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file under ``tmp_path`` (never ``sqlite://``,
    whose one shared connection hides concurrency bugs), or a fresh PostgreSQL
    schema (see ``postgresql_uri``)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queue.db'}"
    return t.cast(str, request.getfixturevalue("postgresql_uri"))


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queue.db'}"


def create_test_app(
    database_uri: str, instance_path: Path, **config: t.Any
) -> tuple[Flask, SQLAlchemy, PlainQueue]:
    """A fresh app, db and queue, so metadata and registries never leak."""
    app = Flask(__name__, instance_path=str(instance_path))
    app.config.update(
        {
            "SQLALCHEMY_DATABASE_URI": database_uri,
            "TESTING": True,
            "SECRET_KEY": "test",
            "PLAINQUEUE_LEASE_SECONDS": 30,
            **config,
        }
    )
    db = SQLAlchemy()
    db.init_app(app)
    queue = PlainQueue(db=db)
    queue.init_app(app)
    return app, db, queue


class Env(t.NamedTuple):
    app: Flask
    db: SQLAlchemy
    queue: PlainQueue


@pytest.fixture
def env(database_uri: str, tmp_path: Path) -> Iterator[Env]:
    """App, db and queue on ``database_uri`` with tables created; the queue
    table is created again after tasks are defined, by ``make_tables``."""
    app, db, queue = create_test_app(database_uri, tmp_path / "instance")
    with app.app_context():
        db.drop_all()
        db.create_all()
    yield Env(app, db, queue)
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


@pytest.fixture
def app_ctx(env: Env) -> Iterator[None]:
    with env.app.app_context():
        yield


@pytest.fixture
def unopened_uri(tmp_path: Path) -> Iterator[str]:
    """A SQLite URI for unit tests, which build apps but never open a database:
    fails the test if anything created the file."""
    path = tmp_path / "never-opened.db"
    yield f"sqlite:///{path}"
    assert not path.exists(), "a unit test opened the database"
