"""The test example of docs/coming-from.rst, for the app in coming_from.py next
to this file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import coming_from
import pytest
from coming_from import send_email
from coming_from import sign_up
from flask import Flask

from flask_plainqueue.testing import QueueFixture


# [test]
@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = coming_from.create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 't.db'}"}
    )
    with app.app_context():
        yield app


def test_sign_up_sends_an_email(app: Flask, plainqueue: QueueFixture) -> None:
    sign_up("ann@example.com")
    # Only stored so far; the plainqueue fixture (the package's pytest plugin)
    # finds the app through the app fixture above.
    plainqueue.assert_enqueued(send_email, data={"to": "ann@example.com"})
    assert "ann@example.com" not in coming_from.outbox
    assert plainqueue.run() == 1  # runs what is due, here, as a worker would
    assert "ann@example.com" in coming_from.outbox


# [/test]


# [eager]
def test_sign_up_with_eager_tasks(tmp_path: Path) -> None:
    app = coming_from.create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 't.db'}",
            "PLAINQUEUE_EAGER": True,  # perform() runs the task at once
        }
    )
    with app.app_context():
        sign_up("bob@example.com")
    assert "bob@example.com" in coming_from.outbox


# [/eager]
