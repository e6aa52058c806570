"""The examples of docs/tasks.rst, run by tests/integration/test_docs.py."""

from __future__ import annotations

import asyncio
import datetime
import typing as t

from flask import current_app
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import select
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_plainqueue import PlainQueue
from flask_plainqueue import Retry

db = SQLAlchemy()
queue = PlainQueue(db=db)


class Contact(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(unique=True)
    confirmation_sent: Mapped[bool] = mapped_column(default=False)


#: Stands in for an email service.
outbox: list[str] = []


# [define]
def mark_sent(data: dict[str, str]) -> None:
    contact = db.session.scalars(select(Contact).filter_by(email=data["email"])).one()
    # No commit here: the worker commits this together with the task's removal.
    contact.confirmation_sent = True


def report(data: dict[str, str], error: BaseException) -> None:
    current_app.logger.warning("Could not email %s: %r", data["email"], error)


@queue.task(
    name="double_opt_in",
    batch_size=5,
    success=mark_sent,
    failure=report,
    max_retries=5,
    retry_interval=3.0,
)
def double_opt_in(data: dict[str, str]) -> None:
    outbox.append(data["email"])


# [/define]


# [bare]
@queue.task
def cleanup(data: None) -> None:
    """Named ``tasks_app.cleanup`` after its module and function."""


# [/bare]


#: Stands in for the digests sent.
digests: list[str] = []


@queue.periodic(every=datetime.timedelta(days=1), name="daily_digest")
def daily_digest() -> None:
    """Runs at midnight UTC, once a day however many workers run."""
    digests.append("digest")


# [sign-up]
def sign_up(email: str) -> None:
    db.session.add(Contact(email=email))
    double_opt_in.perform({"email": email}, commit=False)
    db.session.commit()  # the contact and its task, or neither


# [/sign-up]


# [async]
@queue.task(name="fetch_avatar", batch_size=20)
async def fetch_avatar(data: dict[str, str]) -> None:
    # Runs on the worker's event loop, in its own app context; the 20 tasks of
    # a batch wait on their I/O together.
    await asyncio.sleep(0.01)  # e.g. an httpx.AsyncClient request
    outbox.append(f"avatar:{data['email']}")


# [/async]


class CRMBusy(Exception):
    """The CRM asks us to come back later."""


#: Stands in for the CRM's answers, one per attempt.
crm_answers: list[str] = []


# [retries]
@queue.task(
    name="sync_crm",
    max_retries=8,  # at most 9 runs
    retry_interval=2.0,  # wait 2 s after the first failure,
    retry_backoff=2.0,  # then 4 s, 8 s, 16 s, ...
    retry_jitter=0.1,  # each stretched by up to 10 %,
    retry_max_delay=600.0,  # and never more than 10 minutes
    retry_on=(ConnectionError,),  # any other exception: dead at once
)
def sync_crm(data: dict[str, t.Any]) -> None:
    answer = crm_answers.pop(0) if crm_answers else "ok"
    if answer == "busy":
        raise Retry(delay=30)  # not a failure: failed_nr stays as it is
    if answer == "down":
        raise ConnectionError("CRM unreachable")
    if answer == "bad":
        raise ValueError("CRM rejected the record")


# [/retries]


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///tasks.db"
    app.config.update(test_config or {})
    db.init_app(app)
    queue.init_app(app)
    with app.app_context():
        db.create_all()
    return app
