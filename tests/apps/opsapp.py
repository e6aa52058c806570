"""A small app for the operations tests: ``flask queue`` subprocesses and the
dashboard under a real server in a browser.

Configured from the environment:

``OPSAPP_DATABASE_URI``
    the SQLAlchemy URI (a SQLite file under the test's ``tmp_path``).
``OPSAPP_INSTANCE_PATH``
    the app's instance folder.

The dashboard is mounted at ``/queue`` behind a one-password login
(``/login``, password ``letmein``).
"""

from __future__ import annotations

import datetime
import os
import threading
import typing as t

from flask import Flask
from flask import redirect
from flask import request
from flask import session
from flask import url_for
from flask.typing import ResponseReturnValue
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue

db = SQLAlchemy()
queue = PlainQueue(db=db)

#: The one password of the login page.
PASSWORD = "letmein"


@queue.task(name="ops.ok")
def ok(data: t.Any) -> None:
    """Succeeds."""


@queue.task(name="ops.fail", max_retries=0)
def fail(data: t.Any) -> None:
    """Fails at once and for good, with ``data["error"]`` as the message."""
    message = data.get("error", "boom") if isinstance(data, dict) else "boom"
    if (
        isinstance(data, dict)
        and data.get("ok_file")
        and os.path.exists(data["ok_file"])
    ):
        return
    raise ValueError(message)


#: Set to let every running ``ops.wait`` task return (in-process tests).
released = threading.Event()


@queue.task(name="ops.wait")
def wait(data: t.Any) -> None:
    """Runs until :data:`released` is set (at most a minute), so a page can
    show it running."""
    released.wait(60)


@queue.task(name="emails.send_welcome", batch_size=5)
def send_welcome(data: t.Any) -> None:
    """Succeeds (a stand-in for sending an email)."""


@queue.task(name="invoices.render", max_retries=2, retry_interval=0.0)
def render_invoice(data: t.Any) -> None:
    """Fails (a stand-in for a task with a bug)."""
    raise RuntimeError(f"template 'invoice.html' not found for invoice {data}")


@queue.periodic(name="reports.hourly", every=datetime.timedelta(hours=1))
def hourly_report() -> None:
    """A periodic task, for the dashboard's Periodic page."""


@queue.dashboard_auth
def logged_in() -> bool:
    return session.get("user") == "admin"


def create_app(**config: t.Any) -> Flask:
    app = Flask(__name__, instance_path=os.environ.get("OPSAPP_INSTANCE_PATH"))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ.get(
            "OPSAPP_DATABASE_URI", "sqlite:///ops.db"
        ),
        SECRET_KEY="ops-test-secret",
        PLAINQUEUE_DASHBOARD=True,
        PLAINQUEUE_EMBEDDED_WORKER=False,
    )
    app.config.update(config)
    db.init_app(app)
    queue.init_app(app)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> ResponseReturnValue:
        if request.method == "POST" and request.form.get("password") == PASSWORD:
            session["user"] = "admin"
            return redirect(url_for("plainqueue.overview"))
        return (
            "<!doctype html><title>Log in</title><form method=post>"
            "<input type=password name=password id=password>"
            "<button type=submit id=login>Log in</button></form>"
        )

    with app.app_context():
        db.create_all()
    return app
