"""Testing an app that uses flask-plainqueue: the examples of docs/testing.rst.

``tasks_app`` is the app of docs/tasks.rst, next to this file. The
``plainqueue`` fixture comes with flask-plainqueue (a pytest plugin).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
import tasks_app
from flask import Flask
from sqlalchemy import select
from tasks_app import Contact
from tasks_app import daily_digest
from tasks_app import db
from tasks_app import double_opt_in
from tasks_app import queue
from tasks_app import sign_up
from tasks_app import sync_crm

from flask_plainqueue.testing import QueueFixture


# [fixture]
@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = tasks_app.create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'test.db'}",
        }
    )
    tasks_app.outbox.clear()
    tasks_app.crm_answers.clear()
    tasks_app.digests.clear()
    with app.app_context():
        yield app


def test_sign_up_sends_the_email(plainqueue: QueueFixture) -> None:
    sign_up("a@example.com")
    plainqueue.assert_enqueued(double_opt_in, data={"email": "a@example.com"})
    assert "a@example.com" not in tasks_app.outbox  # only enqueued so far

    assert plainqueue.run() == 1  # runs every due task, as a worker would

    assert "a@example.com" in tasks_app.outbox
    contact = db.session.scalars(select(Contact)).one()
    assert contact.confirmation_sent  # the success callback's write
    assert plainqueue.enqueued() == []  # done tasks go


# [/fixture]


# [clock]
def test_a_delayed_email_waits_for_its_time(plainqueue: QueueFixture) -> None:
    db.session.add(Contact(email="b@example.com"))
    double_opt_in.perform({"email": "b@example.com"}, delay=3600)
    (task,) = plainqueue.assert_enqueued(double_opt_in, count=1)
    assert task.state == "scheduled"

    assert plainqueue.run(double_opt_in) == 0  # not due for an hour
    plainqueue.clock.advance(3600)
    assert plainqueue.run(double_opt_in) == 1
    assert tasks_app.outbox == ["b@example.com"]
    # Of this task: an hour on, the app's daily digest may be due too.
    assert plainqueue.enqueued(double_opt_in) == []


def test_the_crm_sync_is_retried_after_its_back_off(plainqueue: QueueFixture) -> None:
    tasks_app.crm_answers[:] = ["down"]  # the first attempt fails
    sync_crm.perform({"id": 1})

    assert plainqueue.run(sync_crm) == 1  # failed attempts count too
    (task,) = plainqueue.enqueued(sync_crm)
    assert task.failed_nr == 1
    assert task.error is not None
    assert "ConnectionError: CRM unreachable" in task.error

    plainqueue.clock.advance(1.9)  # retry_interval=2.0 (+ up to 10 % jitter)
    assert plainqueue.run(sync_crm) == 0
    plainqueue.clock.advance(0.3)
    assert plainqueue.run(sync_crm) == 1  # succeeded: gone
    plainqueue.assert_enqueued(sync_crm, count=0)


# [/clock]


# [periodic]
def test_the_digest_goes_out_at_midnight(plainqueue: QueueFixture) -> None:
    # A fixed start, so the test always passes the same ticks.
    plainqueue.clock.set(
        datetime.datetime(2030, 1, 1, 23, 0, tzinfo=datetime.timezone.utc)
    )
    assert plainqueue.run(daily_digest) == 0  # a new schedule waits for its tick

    plainqueue.clock.advance(datetime.timedelta(hours=2))  # passes midnight
    plainqueue.assert_enqueued(daily_digest, count=1)
    assert plainqueue.run(daily_digest) == 1
    assert tasks_app.digests == ["digest"]


# [/periodic]


# [drain]
def test_drain_runs_what_is_due(app: Flask) -> None:
    sign_up("c@example.com")

    assert queue.drain() == 1  # without the fixture: the real clock

    assert "c@example.com" in tasks_app.outbox
    assert db.session.scalars(select(queue.Task)).all() == []


# [/drain]


# [eager]
@pytest.fixture
def eager_app(tmp_path: Path) -> Iterator[Flask]:
    app = tasks_app.create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'test.db'}",
            "PLAINQUEUE_EAGER": True,
        }
    )
    with app.app_context():
        yield app


def test_sign_up_runs_the_task_at_once(eager_app: Flask) -> None:
    sign_up("d@example.com")  # the task ran when sign_up committed

    assert "d@example.com" in tasks_app.outbox
    contact = db.session.scalars(select(Contact)).one()
    assert contact.confirmation_sent


# [/eager]
