"""The Flask app our measurements run: ``flask --app benchmarks.ourapp queue work``.

Configured by environment variables, so every measuring process builds the same app:

``BENCH_DB_URI``      the database
``BENCH_TASK``        which task body is registered as ``bench_task``: ``noop``,
                      ``count`` (stops the worker after ``BENCH_STOP_AFTER`` tasks, notes
                      when ``BENCH_WARM`` tasks ran, samples RSS), ``latency`` (reports its start over UDP to
                      ``BENCH_UDP_PORT``) or ``account`` (reads and writes one row of
                      the app's own ``account`` table through ``db.session``)
``BENCH_BATCH``       the task's ``batch_size``
``BENCH_NAMES``       how many task names are registered (``bench_task`` and
                      ``bench_task_00``, ... running the same body)
``BENCH_SYNC``        ``PLAINQUEUE_SQLITE_SYNCHRONOUS``
``BENCH_CONCURRENCY`` ``PLAINQUEUE_CONCURRENCY`` (default 1: the peers run one thread)
``BENCH_KEEP``        ``PLAINQUEUE_KEEP_SUCCEEDED`` (default 0: succeeded tasks are deleted)
``BENCH_DIR``         where the start barrier and results live (unset: no barrier)
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import typing as t

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_plainqueue import PlainQueue
from flask_plainqueue import signals

from .common import Barrier
from .common import rss_mib
from .common import TASK_NAME

db = SQLAlchemy()
queue = PlainQueue(db=db)


class Account(db.Model):  # type: ignore[name-defined,misc]
    """The app's own table the realistic task touches."""

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    balance: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    touched: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)


_lock = threading.Lock()
_count = 0
_stop_after = 0
_rss_every = 0
_rss_samples: list[tuple[int, float]] = []
_stopped_at: list[float] = []
_warm = 0
_warm_at: list[float] = []
_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
_udp_port = 0


def _noop(data: t.Any) -> None:
    pass


def _count_task(data: t.Any) -> None:
    global _count
    with _lock:
        _count += 1
        n = _count
    if _warm and n == _warm:
        _warm_at.append(time.time())
    if _rss_every and n % _rss_every == 0:
        _rss_samples.append((n, rss_mib()))
    if _stop_after and n == _stop_after:
        _stopped_at.append(time.time())
        # The worker's own SIGTERM handling: stop claiming, finish, exit 0.
        os.kill(os.getpid(), signal.SIGTERM)


def _latency_task(data: t.Any) -> None:
    started = time.monotonic()
    _udp.sendto(f"{data['i']} {started!r}".encode(), ("127.0.0.1", _udp_port))


def _account_task(data: t.Any) -> None:
    account = db.session.get(Account, data["account"])
    assert account is not None
    account.balance += 1
    account.touched += 1
    db.session.commit()


_BODIES: dict[str, t.Callable[[t.Any], None]] = {
    "noop": _noop,
    "count": _count_task,
    "latency": _latency_task,
    "account": _account_task,
}


def create_app() -> Flask:
    global _stop_after, _rss_every, _udp_port, _warm
    _stop_after = int(os.environ.get("BENCH_STOP_AFTER", "0"))
    _warm = int(os.environ.get("BENCH_WARM", "0"))
    _rss_every = int(os.environ.get("BENCH_RSS_EVERY", "0"))
    _udp_port = int(os.environ.get("BENCH_UDP_PORT", "0"))
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ["BENCH_DB_URI"],
        PLAINQUEUE_SQLITE_SYNCHRONOUS=os.environ.get("BENCH_SYNC", "NORMAL"),
        PLAINQUEUE_POLL_INTERVAL=float(os.environ.get("BENCH_POLL", "1.0")),
        # One claim loop, as the peers run one thread.
        PLAINQUEUE_CONCURRENCY=int(os.environ.get("BENCH_CONCURRENCY", "1")),
        PLAINQUEUE_KEEP_SUCCEEDED=float(os.environ.get("BENCH_KEEP", "0")),
        PLAINQUEUE_POSTGRESQL_SYNCHRONOUS_COMMIT=os.environ.get("BENCH_PG_COMMIT"),
    )
    db.init_app(app)
    queue.init_app(app)
    if TASK_NAME not in queue.registry:
        body = _BODIES[os.environ.get("BENCH_TASK", "noop")]
        queue.task(name=TASK_NAME, batch_size=int(os.environ.get("BENCH_BATCH", "1")))(
            body
        )
        # More task names beside it (the claim then has to find which is next),
        # all running the same body.
        for i in range(int(os.environ.get("BENCH_NAMES", "1")) - 1):
            queue.task(
                name=f"{TASK_NAME}_{i:02d}",
                batch_size=int(os.environ.get("BENCH_BATCH", "1")),
            )(body)
    directory = os.environ.get("BENCH_DIR")
    if directory:
        barrier = Barrier(directory)
        started: list[float] = []

        def on_started(sender: Flask, **kwargs: t.Any) -> None:
            rss = rss_mib()
            started.append(barrier.ready_and_wait())
            started.append(rss)

        def on_stopped(sender: Flask, **kwargs: t.Any) -> None:
            end = time.time()
            barrier.done(
                start=started[0],
                end=end,
                stopped_at=_stopped_at[0] if _stopped_at else None,
                warm_at=_warm_at[0] if _warm_at else None,
                count=_count,
                rss_start=started[1],
                rss_end=rss_mib(),
                rss_samples=_rss_samples,
            )

        signals.worker_started.connect(on_started, app, weak=False)
        signals.worker_stopped.connect(on_stopped, app, weak=False)
    return app
