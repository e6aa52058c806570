"""A sign-up form with double opt-in: signing up stores the contact and, in the
same transaction, a task that emails them a confirmation link. The admin can
build a monthly report of the sign-ups, whose page follows the task's
progress live (``queue.stream``).

Run it with its embedded worker::

    flask --app example_app run

Settings in ``instance/config.py`` override the defaults below. The app creates
its tables (the queue's too) with ``db.create_all()`` at start-up; set
``CREATE_TABLES = False`` there when Flask-Migrate manages the schema instead
(see docs/migrations.rst).
"""

from __future__ import annotations

import logging
import os
import typing as t
from collections.abc import Mapping

import sqlalchemy as sa
from flask import Flask

from .admin import bp as admin_bp
from .extensions import db
from .extensions import queue
from .reports import bp as reports_bp
from .views import bp


def create_app(
    test_config: Mapping[str, t.Any] | None = None,
    *,
    instance_path: str | None = None,
) -> Flask:
    """Create the app.

    :param test_config: settings that replace ``instance/config.py``.
    :param instance_path: where the database lives; default ``instance/`` next to
        the package.
    """
    # Show the worker's line per task next to the server's request log.
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )

    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    database = os.path.join(app.instance_path, "example_app.sqlite")
    app.config.from_mapping(
        SECRET_KEY="dev",  # replace it in instance/config.py when deploying
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{database}",
        # Import the tasks in every process that runs a worker.
        PLAINQUEUE_TASKS=["example_app.tasks"],
        # The queue dashboard at /queue, behind the admin login (admin.py).
        PLAINQUEUE_DASHBOARD=True,
        ADMIN_PASSWORD="admin",  # replace it in instance/config.py when deploying
        CREATE_TABLES=True,
    )
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
    else:
        app.config.from_mapping(test_config)

    db.init_app(app)
    queue.init_app(app)

    if app.config["CREATE_TABLES"]:
        with app.app_context():
            _create_tables()

    app.register_blueprint(bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(reports_bp)
    return app


def _create_tables(attempts: int = 5) -> None:
    """``db.create_all()``, in a process that may start beside others on a new
    database (gunicorn's workers, ``flask queue work``): each checks which
    tables exist, then creates the missing ones, so one that lost the race to
    create a table fails with "already exists". The next attempt finds it."""
    for attempt in range(attempts):
        try:
            db.create_all()
            return
        except sa.exc.DatabaseError:
            if attempt == attempts - 1:
                raise
