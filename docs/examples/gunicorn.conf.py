"""gunicorn settings that run the queue's worker inside each gunicorn worker:
``gunicorn -c gunicorn.conf.py``."""

from __future__ import annotations

import typing as t

wsgi_app = "myapp:create_app()"
workers = 2
# worker_class = "gevent"  # the queue's worker then runs as a greenlet


def post_worker_init(worker: t.Any) -> None:
    # Runs in each worker process once it has loaded the app (and, with
    # worker_class "gevent", after gevent's monkey-patching).
    app = worker.wsgi
    app.extensions["plainqueue"].start_worker(app)


def worker_exit(server: t.Any, worker: t.Any) -> None:
    # Let running tasks finish, within gunicorn's graceful_timeout (30 s).
    app = worker.wsgi
    app.extensions["plainqueue"].stop_worker(app, timeout=20)
