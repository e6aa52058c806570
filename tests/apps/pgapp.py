"""The app the PostgreSQL process tests run under ``flask queue work``.

Configured from the environment:

``PGAPP_DATABASE_URI``
    the SQLAlchemy URI (the test's own schema, see ``postgresql_uri``).
``PGAPP_BATCH_SIZE``
    the ``batch_size`` of the ``record`` task (default 50).
``PGAPP_SLEEP``
    seconds the ``record`` task sleeps before recording (default 0).
``PGAPP_POOL_SIZE``
    when set, the engine's ``pool_size`` (and ``max_overflow`` 2), so that many
    worker processes stay within the server's ``max_connections``.
``PLAINQUEUE_*``
    copied into ``app.config``, values parsed as JSON where they parse.

Every run of a task is recorded in ``pg_runs``, whose primary key is the task's
key: a second run of one key increments ``runs`` instead of adding a row, so a
test sees both that each task ran and whether any ran twice.
"""

from __future__ import annotations

import json
import os
import time
import typing as t

import click
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue

db = SQLAlchemy()
queue = PlainQueue(db=db)

runs = sa.Table(
    "pg_runs",
    db.metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("runs", sa.Integer, nullable=False),
    # time.time() when the task started and when it last ran (seconds).
    sa.Column("first_at", sa.Float, nullable=False),
    sa.Column("last_at", sa.Float, nullable=False),
    # When the task was enqueued (from the data), for pickup latency.
    sa.Column("enqueued_at", sa.Float, nullable=True),
)

_RECORD = sa.text(
    "INSERT INTO pg_runs (key, pid, runs, first_at, last_at, enqueued_at)"
    " VALUES (:key, :pid, 1, :now, :now, :enqueued_at)"
    " ON CONFLICT (key) DO UPDATE SET runs = pg_runs.runs + 1,"
    " last_at = EXCLUDED.last_at"
)


def _record(data: dict[str, t.Any]) -> None:
    started = time.time()
    sleep = float(os.environ.get("PGAPP_SLEEP", "0"))
    if sleep:
        time.sleep(sleep)
    db.session.execute(
        _RECORD,
        {
            "key": data["key"],
            "pid": os.getpid(),
            "now": started,
            "enqueued_at": data.get("at"),
        },
    )
    db.session.commit()


@queue.task(
    name="record",
    batch_size=int(os.environ.get("PGAPP_BATCH_SIZE", "50")),
    retry_interval=0.2,
    max_retries=20,
)
def record(data: dict[str, t.Any]) -> None:
    """Record one run of ``data["key"]`` (a cheap no-op task)."""
    _record(data)


def _env_config() -> dict[str, t.Any]:
    config: dict[str, t.Any] = {}
    for key, value in os.environ.items():
        if key.startswith("PLAINQUEUE_"):
            try:
                config[key] = json.loads(value)
            except ValueError:
                config[key] = value
    return config


def create_app() -> Flask:
    """The app, configured from the environment."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["PGAPP_DATABASE_URI"]
    pool_size = os.environ.get("PGAPP_POOL_SIZE")
    if pool_size:
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            "pool_size": int(pool_size),
            "max_overflow": 2,
        }
    app.config.update(_env_config())
    db.init_app(app)
    queue.init_app(app)

    @app.cli.command("enqueue")
    @click.option("--count", type=int, default=1)
    @click.option("--chunk", type=int, default=1)
    @click.option("--prefix", default="k")
    def enqueue(count: int, chunk: int, prefix: str) -> None:
        """Enqueue ``count`` ``record`` tasks keyed ``PREFIX0``, ``PREFIX1``...,
        ``perform_many`` of ``chunk`` at a time (``perform`` with ``--chunk 1``)."""
        for start in range(0, count, chunk):
            items: list[t.Any] = [
                {"key": f"{prefix}{i}"} for i in range(start, min(start + chunk, count))
            ]
            if chunk == 1:
                queue.perform(record, items[0])
            else:
                queue.perform_many(record, items)
        click.echo(f"enqueued {count}")

    return app
