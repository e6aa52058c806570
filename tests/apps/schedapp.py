"""An app for the scheduling tests' subprocesses (``flask queue work``).

``SCHEDAPP_DATABASE_URI`` points it at the test's SQLite file;
``PLAINQUEUE_*`` variables are copied into the config (parsed as JSON).
"""

from __future__ import annotations

import datetime
import json
import os
import time

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_plainqueue import PlainQueue

db = SQLAlchemy()
queue = PlainQueue(db=db)


class Tick(db.Model):  # type: ignore[name-defined,misc]
    """One run of the periodic task."""

    __tablename__ = "ticks"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[float]
    pid: Mapped[int]


class Credit(db.Model):  # type: ignore[name-defined,misc]
    """Rows written by the atomic task, one per step."""

    __tablename__ = "credits"
    id: Mapped[int] = mapped_column(primary_key=True)
    step: Mapped[str] = mapped_column(sa.String(50))


@queue.periodic(every=datetime.timedelta(seconds=1), name="heartbeat")
def heartbeat() -> None:
    db.session.add(Tick(at=time.time(), pid=os.getpid()))
    db.session.commit()


@queue.task(name="move_credit", atomic=True, max_retries=3, retry_interval=0)
def move_credit(data: dict[str, str]) -> None:
    db.session.add(Credit(step="debit"))
    db.session.flush()
    marker = data.get("wait_for")
    started = data.get("started")
    if started and not os.path.exists(started):
        # First run: say we are mid-way, then wait to be killed.
        with open(started, "w") as f:
            f.write(str(os.getpid()))
        while marker and not os.path.exists(marker):
            time.sleep(0.05)
    db.session.add(Credit(step="credit"))


@queue.task(name="unique_job")
def unique_job(data: int) -> None:
    pass


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["SCHEDAPP_DATABASE_URI"]
    for key, value in os.environ.items():
        if key.startswith("PLAINQUEUE_"):
            try:
                app.config[key] = json.loads(value)
            except ValueError:
                app.config[key] = value
    db.init_app(app)
    queue.init_app(app)
    with app.app_context():
        db.create_all()
    return app
