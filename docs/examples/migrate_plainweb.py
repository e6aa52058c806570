"""Moving the tasks waiting in a plainweb ``tasks`` table into flask-plainqueue:
the example of docs/migrating.rst, run by tests/integration/test_docs.py."""

from __future__ import annotations

import datetime
import typing as t

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue
from flask_plainqueue import UnknownTask

db = SQLAlchemy()
queue = PlainQueue(db=db)

#: Stands in for an email service.
outbox: list[str] = []


# [task]
# plainweb named this task after its file, app/tasks/double-opt-in.ts; keeping
# the name lets the rows already waiting under it run.
@queue.task(name="double-opt-in", batch_size=5)
def double_opt_in(data: dict[str, str]) -> None:
    outbox.append(data["email"])


# [/task]


# [copy]
UTC = datetime.timezone.utc


def _from_ms(value: int | None) -> datetime.datetime | None:
    """plainweb stores times as milliseconds since the epoch."""
    if value is None:
        return None
    return datetime.datetime.fromtimestamp(value / 1000, UTC)


def copy_plainweb_tasks(source_table: str = "tasks") -> int:
    """Copy every row of plainweb's table into the queue's table in one
    transaction and return how many were copied. Rows that are out of retries
    stay dead, as in plainweb. Run it with both apps' workers stopped, then
    drop the old table."""
    old = sa.Table(source_table, sa.MetaData(), autoload_with=db.engine)
    now = datetime.datetime.now(UTC)
    rows = []
    for row in db.session.execute(sa.select(old)).mappings():
        failed_nr = row["failed_nr"] or 0
        try:
            dead = failed_nr > queue.registry.get(row["name"]).options.max_retries
        except UnknownTask:
            dead = False  # a task this code does not define: keep it waiting
        rows.append(
            {
                "name": row["name"],
                "data": row["data"],  # already JSON text
                "created": _from_ms(row["created"]),
                "run_at": now,
                "status": "dead" if dead else "queued",
                "attempts": failed_nr,
                "failed_nr": failed_nr,
                "failed_last": _from_ms(row["failed_last"]),
                "failed_error": row["failed_error"],
            }
        )
    if rows:
        db.session.execute(sa.insert(queue.Task), rows)
    db.session.commit()
    return len(rows)


# [/copy]


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///app.db"
    app.config.update(test_config or {})
    db.init_app(app)
    queue.init_app(app)
    with app.app_context():
        db.create_all()
    return app
