"""``example_app`` with its schema from Flask-Migrate instead of ``create_all``,
as docs/migrations.rst sets it up: ``flask --app migexample db ...``.
``MIGAPP_DB`` is the database URI, ``MIGAPP_DIR`` the migrations directory and
``MIGAPP_INSTANCE`` the instance folder."""

from __future__ import annotations

import os

from flask import Flask
from flask_migrate import Migrate

import example_app
from example_app.extensions import db

migrate = Migrate()


def create_app() -> Flask:
    app = example_app.create_app(
        {"SQLALCHEMY_DATABASE_URI": os.environ["MIGAPP_DB"], "CREATE_TABLES": False},
        instance_path=os.environ["MIGAPP_INSTANCE"],
    )
    migrate.init_app(app, db, directory=os.environ["MIGAPP_DIR"])
    return app
