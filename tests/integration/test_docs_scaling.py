"""docs/scaling.rst's samples do what the page says: its Python snippets
configure a working app, its SQL runs on PostgreSQL, its systemd unit runs a
worker command that parses, and its numbers add up. (The export/import commands
it shows run for real in test_transfer.py.)"""

from __future__ import annotations

import re
import shlex
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue
from flask_plainqueue.cli import make_cli
from flask_plainqueue.config import DEFAULTS

DOCS = Path(__file__).parent.parent.parent / "docs"
PAGE = (DOCS / "scaling.rst").read_text()


def _blocks(language: str) -> list[str]:
    """The bodies of the page's ``.. code-block:: LANGUAGE`` directives."""
    found = []
    pattern = rf"^( *)\.\. code-block:: {language}\n\n((?:\1    .*\n|\n)+)"
    for indent, body in re.findall(pattern, PAGE, re.M):
        lines = [line[len(indent) + 4 :] for line in body.splitlines()]
        found.append("\n".join(lines).strip() + "\n")
    return found


@pytest.mark.postgresql
def test_python_snippets_configure_a_working_app(postgresql_uri: str) -> None:
    blocks = _blocks("python")
    assert len(blocks) == 2
    app = Flask(__name__)
    for block in blocks:
        exec(compile(block, "scaling.rst", "exec"), {"app": app})
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg://")
    options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
    assert options == {"pool_size": 4, "max_overflow": 4, "pool_pre_ping": True}
    # The same settings against the real server: the pool is sized as the page
    # says, and the queue works through it.
    app.config["SQLALCHEMY_DATABASE_URI"] = postgresql_uri
    db = SQLAlchemy()
    db.init_app(app)
    queue = PlainQueue(db=db)
    queue.init_app(app)

    @queue.task(name="t")
    def task(data: t.Any) -> None: ...

    with app.app_context():
        db.create_all()
        pool = t.cast(sa.QueuePool, db.engine.pool)
        assert pool.size() == 4
        assert pool._max_overflow == 4
        queue.perform(task, 1)
        assert queue.drain() == 1
        db.session.remove()
        db.engine.dispose()


@pytest.mark.postgresql
def test_vacuum_settings_apply(postgresql_uri: str) -> None:
    (sql,) = _blocks("sql")
    engine = sa.create_engine(postgresql_uri, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE plainqueue_tasks (id bigint)")
            conn.exec_driver_sql(sql.rstrip().rstrip(";"))
            options = conn.execute(
                sa.text(
                    "SELECT reloptions FROM pg_class WHERE relname = 'plainqueue_tasks'"
                    " AND relnamespace = current_schema()::regnamespace"
                )
            ).scalar()
    finally:
        engine.dispose()
    assert options is not None
    assert sorted(options) == [
        "autovacuum_vacuum_scale_factor=0.01",
        "autovacuum_vacuum_threshold=1000",
    ]


def test_systemd_template_unit() -> None:
    unit = (DOCS / "examples" / "plainqueue-worker@.service").read_text()
    assert ".. literalinclude:: examples/plainqueue-worker@.service" in PAGE
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    words = shlex.split(exec_start)
    assert words[1:3] == ["queue", "work"]
    make_cli(t.cast(t.Any, None)).commands["work"].make_context("work", words[3:])
    stop = int(re.findall(r"^TimeoutStopSec=(\d+)$", unit, re.M)[0])
    assert stop > DEFAULTS["PLAINQUEUE_SHUTDOWN_GRACE"]
    assert "systemctl enable --now plainqueue-worker@1" in PAGE


def test_connection_arithmetic() -> None:
    """The page's worked example of max_connections."""
    assert "4 hosts × 2 worker processes ×\n(5 + 10 + 1) = 128" in PAGE
    assert 4 * 2 * (5 + 10 + 1) == 128
    assert "(4 + 4 + 1 gives 72)" in PAGE
    assert 4 * 2 * (4 + 4 + 1) == 72


@pytest.mark.parametrize("key", ["PLAINQUEUE_NOTIFY", "PLAINQUEUE_POLL_INTERVAL"])
def test_referenced_settings_exist(key: str) -> None:
    assert f":data:`{key}`" in PAGE
    assert key in DEFAULTS
