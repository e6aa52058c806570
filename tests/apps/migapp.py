"""An app whose schema comes from Flask-Migrate, as a user's would:
``flask --app migapp db ...``. ``MIGAPP_DB`` is the database URI and
``MIGAPP_DIR`` the migrations directory; ``MIGAPP_OUT`` is a file each task
run appends its data to."""

from __future__ import annotations

import datetime
import json
import os
import typing as t

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_plainqueue import PlainQueue

db = SQLAlchemy()
queue = PlainQueue(db=db)
migrate = Migrate()


class Note(db.Model):  # type: ignore[name-defined,misc]
    """One table of the app's own beside the queue's."""

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(db.String(100))


@queue.task(name="record")
def record(data: t.Any) -> None:
    with open(os.environ["MIGAPP_OUT"], "a") as out:
        out.write(json.dumps(data) + "\n")


@queue.periodic(name="tick", every=datetime.timedelta(hours=1))
def tick() -> None:
    pass


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["MIGAPP_DB"]
    db.init_app(app)
    queue.init_app(app)
    migrate.init_app(app, db, directory=os.environ["MIGAPP_DIR"])
    return app
