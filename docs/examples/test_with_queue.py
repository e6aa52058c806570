"""Testing an app that uses flask-plainqueue: the examples of docs/testing.rst.

``tasks_app`` is the app of docs/tasks.rst, next to this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tasks_app
from flask import Flask
from sqlalchemy import select
from tasks_app import Contact
from tasks_app import db
from tasks_app import queue
from tasks_app import sign_up


# [drain]
@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = tasks_app.create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'test.db'}",
        }
    )
    with app.app_context():
        yield app


def test_sign_up_sends_the_email(app: Flask) -> None:
    sign_up("a@example.com")
    assert "a@example.com" not in tasks_app.outbox  # only enqueued so far

    assert queue.drain() == 1  # runs every due task, as a worker would

    assert "a@example.com" in tasks_app.outbox
    contact = db.session.scalars(select(Contact)).one()
    assert contact.confirmation_sent  # the success callback's write
    assert db.session.scalars(select(queue.Task)).all() == []  # done tasks go


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
    sign_up("b@example.com")  # the task ran when sign_up committed

    assert "b@example.com" in tasks_app.outbox
    contact = db.session.scalars(select(Contact)).one()
    assert contact.confirmation_sent


# [/eager]


# [failures]
def test_a_failed_attempt_is_recorded(app: Flask) -> None:
    tasks_app.crm_answers[:] = ["down"]
    task_id = tasks_app.sync_crm.perform({"id": 1})

    assert queue.drain() == 1  # failed attempts count too

    task = db.session.get(queue.Task, int(task_id))
    assert task is not None
    assert task.failed_nr == 1
    assert task.failed_error is not None
    assert "ConnectionError: CRM unreachable" in task.failed_error


# [/failures]
