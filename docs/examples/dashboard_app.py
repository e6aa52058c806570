"""The dashboard behind a login, shown on the dashboard page and run by
``tests/integration/test_dashboard.py``."""

from __future__ import annotations

import os
import typing as t

from flask import abort
from flask import Flask
from flask import redirect
from flask import request
from flask import session
from flask import url_for
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue

db = SQLAlchemy()
queue = PlainQueue(db=db)


@queue.task(name="reports.build")
def build_report(data: dict[str, int]) -> None:
    """A task to look at in the dashboard."""


# [auth]
@queue.dashboard_auth
def is_admin() -> bool:
    """Admins may use the dashboard; anonymous users are sent to log in."""
    if "user" not in session:
        abort(redirect(url_for("login", next=request.path)))
    return session.get("role") == "admin"


# [/auth]


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    # [config]
    app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "dev")  # signs CSRF tokens
    app.config["PLAINQUEUE_DASHBOARD"] = True
    app.config["PLAINQUEUE_DASHBOARD_URL"] = "/admin/queue"  # default: /queue
    # [/config]
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///dashboard.db"
    app.config.update(test_config or {})
    db.init_app(app)
    queue.init_app(app)

    @app.route("/login")
    def login() -> str:
        return "Your login page."

    return app


def mount_elsewhere(app: Flask) -> None:
    """Mount the dashboard by hand (with ``PLAINQUEUE_DASHBOARD`` off)."""
    # [mount]
    from flask_plainqueue.dashboard import make_blueprint

    app.register_blueprint(make_blueprint(queue), url_prefix="/ops/queue")
    # [/mount]
