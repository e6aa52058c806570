"""A small app that the process tests run under ``flask run``, ``flask queue
work`` and gunicorn.

Configured from the environment, so each test points it at its own files:

``PROCAPP_DATABASE_URI``
    the SQLAlchemy URI (a SQLite file under the test's ``tmp_path``).
``PROCAPP_WORKERS_FILE``
    each worker that starts appends ``pid thread-name worker-id`` here.
``PROCAPP_LOG``
    when set, log at INFO to stderr with the process id on each line.
``PROCAPP_TESTING``
    when set, ``app.testing`` is true.
``PLAINQUEUE_*``
    copied into ``app.config``, values parsed as JSON where they parse.

Tasks record each run as a row of ``runs``, so a test can tell whether every
task ran, and whether any ran twice.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import typing as t
from pathlib import Path

import click
import sqlalchemy as sa
from flask import Flask
from flask import jsonify
from flask import request
from flask.typing import ResponseReturnValue
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_plainqueue import PlainQueue
from flask_plainqueue import signals

db = SQLAlchemy()
queue = PlainQueue(db=db)


class Run(db.Model):  # type: ignore[name-defined,misc]
    """One run of a task: its key and the process that ran it."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(100), index=True)
    pid: Mapped[int]


def _record(key: str) -> None:
    db.session.add(Run(key=key, pid=os.getpid()))
    db.session.commit()


@queue.task(name="record")
def record(data: dict[str, str]) -> None:
    """Record one run of ``data["key"]``."""
    _record(data["key"])


@queue.task(name="record_batch", batch_size=20)
def record_batch(data: dict[str, str]) -> None:
    """Like ``record``, claimed 20 at a time and run concurrently."""
    _record(data["key"])


@queue.task(name="block", max_retries=0)
def block(data: dict[str, t.Any]) -> None:
    """Append ``pid time`` to ``data["started"]``, wait until ``data["release"]``
    exists, then record the run."""
    with open(data["started"], "a") as f:
        f.write(f"{os.getpid()} {time.time()}\n")
    deadline = time.monotonic() + float(data.get("timeout", 120))
    while not os.path.exists(data["release"]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{data['release']} did not appear")
        time.sleep(0.01)
    _record(data["key"])


@signals.worker_started.connect
def _on_worker_started(sender: Flask, **kwargs: t.Any) -> None:
    path = os.environ.get("PROCAPP_WORKERS_FILE")
    if path:
        line = (
            f"{os.getpid()} {threading.current_thread().name} {kwargs['worker_id']}\n"
        )
        # O_APPEND: lines from several processes never interleave.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _env_config() -> dict[str, t.Any]:
    config: dict[str, t.Any] = {}
    for key, value in os.environ.items():
        if key.startswith("PLAINQUEUE_"):
            try:
                config[key] = json.loads(value)
            except ValueError:
                config[key] = value
    return config


def create_app(**config: t.Any) -> Flask:
    """The app, configured from the environment and then ``config``."""
    if os.environ.get("PROCAPP_LOG"):
        logging.basicConfig(
            level=logging.INFO,
            format="%(process)d %(threadName)s %(name)s %(levelname)s: %(message)s",
        )
    app = Flask(__name__, instance_path=os.environ.get("PROCAPP_INSTANCE_PATH"))
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("PROCAPP_DATABASE_URI")
    app.config["TESTING"] = bool(os.environ.get("PROCAPP_TESTING"))
    app.config.update(_env_config())
    app.config.update(config)
    db.init_app(app)
    queue.init_app(app)

    @app.get("/pid")
    def pid() -> ResponseReturnValue:
        return jsonify(os.getpid())

    @app.get("/state")
    def state() -> ResponseReturnValue:
        return jsonify(worker_state(app))

    @app.post("/perform")
    def perform() -> ResponseReturnValue:
        body = request.get_json()
        task_id = queue.perform(body["task"], body.get("data"))
        return jsonify(task_id)

    @app.get("/runs")
    def runs() -> ResponseReturnValue:
        keys = db.session.scalars(sa.select(Run.key).order_by(Run.id)).all()
        return jsonify(list(keys))

    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the tables."""
        db.create_all()

    @app.cli.command("worker-state")
    def print_worker_state() -> None:
        """Print this process's worker threads as JSON."""
        click.echo(json.dumps(worker_state(app)))

    @app.cli.command("enqueue")
    @click.option("--task", "tasks", multiple=True, default=["record"])
    @click.option("--count", type=int, default=1)
    @click.option("--chunk", type=int, default=1)
    @click.option("--prefix", default="k")
    def enqueue(tasks: tuple[str, ...], count: int, chunk: int, prefix: str) -> None:
        """Enqueue ``count`` tasks keyed ``PREFIX0``, ``PREFIX1``, ...: one
        ``perform`` each with ``--chunk 1``, else ``perform_many`` of ``chunk``.
        Several ``--task`` take turns, chunk by chunk."""
        for n, start in enumerate(range(0, count, chunk)):
            task = tasks[n % len(tasks)]
            items: list[t.Any] = [
                {"key": f"{prefix}{i}"} for i in range(start, min(start + chunk, count))
            ]
            if chunk == 1:
                queue.perform(task, items[0])
            else:
                queue.perform_many(task, items)
        click.echo(f"enqueued {count}")

    return app


def worker_state(app: Flask) -> dict[str, t.Any]:
    """Whether this process has an embedded worker, and its thread names."""
    thread = queue.embedded_worker(app)
    return {
        "pid": os.getpid(),
        "embedded": thread is not None and thread.is_alive(),
        "threads": sorted(x.name for x in threading.enumerate()),
        "gevent": _gevent_patched(),
    }


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def read_runs(path: Path | str) -> list[tuple[str, int]]:
    """``(key, pid)`` of every recorded run, straight from the SQLite file."""
    import sqlite3

    conn = sqlite3.connect(str(path), timeout=30)
    try:
        return [
            (k, p) for k, p in conn.execute("SELECT key, pid FROM runs ORDER BY id")
        ]
    finally:
        conn.close()
