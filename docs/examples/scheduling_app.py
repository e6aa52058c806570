"""The examples of docs/scheduling.rst; tests/integration/test_docs_scheduling.py runs them."""

from __future__ import annotations

import datetime
import typing as t

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_plainqueue import PlainQueue
from flask_plainqueue import Retry

db = SQLAlchemy()
queue = PlainQueue(db=db)


class Account(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    balance: Mapped[int] = mapped_column(default=0)


# [periodic]
@queue.periodic(cron="*/5 * * * *", name="refresh_cache")
def refresh_cache() -> None:
    """Runs at :00, :05, :10, ... (UTC), once per tick however many workers run."""


@queue.periodic(every=datetime.timedelta(seconds=30), name="heartbeat")
def heartbeat() -> None:
    """Runs every 30 seconds, counted from the Unix epoch."""


@queue.periodic(cron="0 3 * * *", tz="Europe/Berlin", catch_up=False, name="nightly")
def nightly_report() -> None:
    """03:00 Berlin time; skipped (not caught up) if no worker ran then."""


# [/periodic]


# [options]
@queue.task(
    name="send",
    queue="emails",  # flask queue work --queue emails
    priority=5,  # higher is claimed first
    timeout=30,  # an attempt past 30 s fails with TimeoutError
    retry_interval=3.0,  # first retry after 3 s ...
    retry_backoff=2.0,  # ... then 6 s, 12 s, 24 s, ...
    retry_jitter=0.1,  # ... each stretched by up to 10 % at random
    retry_on=(ConnectionError,),  # anything else is dead at once
)
def send(data: dict[str, str]) -> None:
    """Send an email (a stand-in here)."""


# [/options]


# [retry]
@queue.task(name="poll_payment")
def poll_payment(data: dict[str, t.Any]) -> None:
    if data.get("status") != "settled":
        raise Retry(delay=60)  # not a failure: try again in a minute


# [/retry]


# [atomic]
@queue.task(name="move_credit", atomic=True)
def move_credit(data: dict[str, int]) -> None:
    source = db.session.get(Account, data["from"])
    target = db.session.get(Account, data["to"])
    assert source is not None and target is not None
    source.balance -= data["amount"]
    target.balance += data["amount"]
    # No commit: the worker commits these writes together with the removal of
    # the task's row, or rolls all of it back.


# [/atomic]


def create_app(database_uri: str) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_uri
    db.init_app(app)
    queue.init_app(app)
    with app.app_context():
        db.create_all()
    return app


def enqueue_examples() -> list[int]:
    """The perform calls the page shows; returns the ids."""
    # [perform]
    in_30_s = queue.perform(send, {"to": "a@example.com"}, delay=30)
    at_noon = queue.perform(
        send,
        {"to": "b@example.com"},
        run_at=datetime.datetime(2030, 1, 1, 12, tzinfo=datetime.timezone.utc),
    )
    urgent = queue.perform(send, {"to": "c@example.com"}, priority=10)
    first = queue.perform(send, {"to": "d@example.com"}, unique_key="user:42")
    again = queue.perform(send, {"to": "d@example.com"}, unique_key="user:42")
    assert again == first  # still waiting: nothing new is stored
    # [/perform]
    return [in_30_s, at_noon, urgent, first]
