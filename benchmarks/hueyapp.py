"""The Huey side: a ``SqliteStorage`` queue, configured by environment variables
like :mod:`benchmarks.ourapp` (``HUEY_FILE``, ``BENCH_SYNC``, ``BENCH_TASK``,
``BENCH_UDP_PORT``, ``BENCH_DB_URI`` for the realistic task's app database).

Huey's ``fsync`` option knows only FULL (``True``, and SQLite's default when unset)
and OFF (``False``); ``synchronous=NORMAL`` needs the small subclass below.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import typing as t

from huey import Huey  # type: ignore[import-untyped]
from huey.storage import SqliteStorage  # type: ignore[import-untyped]


class NormalSyncSqliteStorage(SqliteStorage):  # type: ignore[misc]
    """Huey's storage with ``PRAGMA synchronous = NORMAL`` (as ours by default)."""

    def _create_connection(self) -> t.Any:
        conn = super()._create_connection()
        conn.execute("pragma synchronous = 1")
        return conn


_sync = os.environ.get("BENCH_SYNC", "FULL")
_storage = NormalSyncSqliteStorage if _sync == "NORMAL" else SqliteStorage
huey = Huey(
    "bench",
    storage_class=_storage,
    filename=os.environ.get("HUEY_FILE", "huey.db"),
    results=False,
)

done = threading.Event()
count = 0
stop_after = int(os.environ.get("BENCH_STOP_AFTER", "0"))
_lock = threading.Lock()
_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
_udp_port = int(os.environ.get("BENCH_UDP_PORT", "0"))
_kind = os.environ.get("BENCH_TASK", "noop")
end_time: list[float] = []
rss_every = int(os.environ.get("BENCH_RSS_EVERY", "0"))
rss_samples: list[tuple[int, float]] = []


def _counted() -> None:
    global count
    with _lock:
        count += 1
        if rss_every and count % rss_every == 0:
            from .common import rss_mib

            rss_samples.append((count, rss_mib()))
        if count == stop_after:
            end_time.append(time.time())
            done.set()


if _kind == "latency":

    @huey.task(name="bench_task")  # type: ignore[untyped-decorator]
    def bench_task(i: int) -> None:
        started = time.monotonic()
        _udp.sendto(f"{i} {started!r}".encode(), ("127.0.0.1", _udp_port))

elif _kind == "account":
    from flask import Flask

    from .ourapp import Account
    from .ourapp import db

    flask_app = Flask(__name__)
    flask_app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get(
        "BENCH_DB_URI", "sqlite://"
    )
    db.init_app(flask_app)

    @huey.task(name="bench_task")  # type: ignore[untyped-decorator]
    def bench_task(i: int) -> None:
        # How a Flask app uses Huey: an app context per task, the app's db.session.
        with flask_app.app_context():
            account = db.session.get(Account, i)
            assert account is not None
            account.balance += 1
            account.touched += 1
            db.session.commit()
        _counted()

else:

    @huey.task(name="bench_task")  # type: ignore[untyped-decorator]
    def bench_task(i: int) -> None:
        _counted()
