"""Gunicorn settings that run flask-plainqueue's embedded worker in each web
worker process, e.g. ``gunicorn -k gevent -c gunicorn_conf.py "procapp:create_app()"``.

The worker is started in ``post_worker_init`` rather than ``post_fork``:
``post_fork`` runs before the web worker has loaded the app (unless
``--preload``) and, with ``-k gevent``, before gevent has monkey-patched the
process, so a thread started there would be a real thread in a gevent process.
By ``post_worker_init`` the app is loaded and, under gevent, the queue's worker
thread is a greenlet.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from flask import Flask

    from flask_plainqueue import PlainQueue

#: Tests run servers side by side: don't share gunicorn's control socket in
#: ``~/.gunicorn`` (the setting is ignored by versions without it).
control_socket_disable = True

# gunicorn ships no type hints, so its arbiter and workers are typed as Any.


def _app_and_queue(worker: t.Any) -> tuple[Flask, PlainQueue]:
    app: Flask = worker.wsgi
    return app, app.extensions["plainqueue"]


def post_worker_init(worker: t.Any) -> None:
    """Start the queue worker once this web worker has loaded the app."""
    app, queue = _app_and_queue(worker)
    queue.start_worker(app)


def worker_exit(server: t.Any, worker: t.Any) -> None:
    """Stop it, handing back what it runs, before the process ends."""
    app, queue = _app_and_queue(worker)
    queue.stop_worker(app, timeout=5)
