"""Run under gevent's monkey-patching: an embedded worker on PostgreSQL polling
every 30 s is woken by NOTIFY when another app (another PlainQueue) performs a
task, and stops cleanly. Prints one line per pickup; exits 0 when all went well.

``PGAPP_DATABASE_URI`` names the database (the test's own schema).
"""

from __future__ import annotations

from gevent import monkey  # type: ignore[import-untyped]

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import typing as t  # noqa: E402

from flask import Flask  # noqa: E402
from flask_sqlalchemy import SQLAlchemy  # noqa: E402

from flask_plainqueue import PlainQueue  # noqa: E402
from flask_plainqueue.pg_listen import Listener  # noqa: E402


def make(poll: float) -> tuple[Flask, SQLAlchemy, PlainQueue]:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ["PGAPP_DATABASE_URI"],
        PLAINQUEUE_POLL_INTERVAL=poll,
        PLAINQUEUE_EMBEDDED_WORKER=False,
    )
    db = SQLAlchemy()
    db.init_app(app)
    queue = PlainQueue(db=db)
    queue.init_app(app)
    return app, db, queue


def main() -> int:
    worker_app, worker_db, worker_queue = make(30.0)
    client_app, client_db, client_queue = make(1.0)
    ran = threading.Event()

    @worker_queue.task(name="ping")
    def ping(data: t.Any) -> None:
        ran.set()

    @client_queue.task(name="ping")
    def client_ping(data: t.Any) -> None: ...

    with worker_app.app_context():
        worker_db.create_all()
    thread = worker_queue.start_worker(worker_app, force=True)
    listener = None
    for _ in range(1000):
        watcher = thread.worker.watcher
        if isinstance(watcher, Listener):
            listener = watcher
            break
        threading.Event().wait(0.01)
    if listener is None or not listener.wait_listening(30):
        print("not listening")
        return 1
    for n in range(3):
        threading.Event().wait(0.5)
        ran.clear()
        with client_app.app_context():
            client_queue.perform(client_ping, n)
        if not ran.wait(10):
            print(f"task {n} not picked up within 10 s of a 30 s poll")
            return 1
        print(f"picked up {n}")
    stopped = worker_queue.stop_worker(worker_app, timeout=5)
    for app, db in ((worker_app, worker_db), (client_app, client_db)):
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    print("stopped" if stopped else "did not stop")
    return 0 if stopped else 1


if __name__ == "__main__":
    sys.exit(main())
