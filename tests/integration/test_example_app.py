"""``example_app`` end to end: a sign-up stores the contact and its email task in
one transaction, the worker sends the email, and the success callback marks
the contact."""

from __future__ import annotations

import datetime
import typing as t
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

ROOT = Path(__file__).parent.parent.parent
UTC = datetime.timezone.utc

if t.TYPE_CHECKING:
    from types import ModuleType


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))
    import example_app

    return example_app


@pytest.fixture
def app(example: ModuleType, tmp_path: Path) -> Iterator[Flask]:
    app: Flask = example.create_app(
        {"TESTING": True}, instance_path=str(tmp_path / "instance")
    )
    yield app
    with app.app_context():
        example.extensions.db.session.remove()
        example.extensions.db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_database_in_the_instance_folder(app: Flask, tmp_path: Path) -> None:
    assert app.instance_path == str(tmp_path / "instance")
    assert (tmp_path / "instance" / "example_app.sqlite").is_file()


def test_sign_up_sends_the_confirmation(
    example: ModuleType, app: Flask, client: FlaskClient
) -> None:
    from example_app.extensions import db
    from example_app.extensions import queue
    from example_app.models import Contact
    from example_app.models import OutboxEmail

    page = client.get("/").get_data(as_text=True)
    assert "Nobody has signed up yet." in page
    assert "The queue is empty." in page

    response = client.post("/sign-up", data={"email": " Ann@Example.com "})
    assert response.status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "sent a confirmation link to ann@example.com" in page
    assert "example_app.send_confirmation" in page  # waiting in the queue

    with app.app_context():
        contact = db.session.scalars(sa.select(Contact)).one()
        assert contact.email == "ann@example.com"
        assert contact.confirmation_sent is None
        (task,) = db.session.scalars(sa.select(queue.Task)).all()
        assert task.name == "example_app.send_confirmation"
        assert task.queue == "emails"
        assert db.session.scalars(sa.select(OutboxEmail)).all() == []

        assert queue.drain() == 1

        db.session.expire_all()
        assert db.session.scalars(sa.select(queue.Task)).all() == []
        (email,) = db.session.scalars(sa.select(OutboxEmail)).all()
        assert email.to == "ann@example.com"
        assert contact.confirmation_sent is not None  # the success callback
        assert contact.confirmed is None
        token = contact.token

    page = client.get("/").get_data(as_text=True)
    assert "The queue is empty." in page
    outbox = client.get("/outbox").get_data(as_text=True)
    assert "Please confirm your email address" in outbox

    # The emailed link confirms the contact.
    link = next(line for line in email.body.splitlines() if "/confirm/" in line)
    assert link.endswith(f"/confirm/{token}")
    response = client.get(urlsplit(link).path)
    assert response.status_code == 302
    with app.app_context():
        confirmed = db.session.get(Contact, contact.id)
        assert confirmed is not None
        assert confirmed.confirmed is not None
    assert client.get("/confirm/not-a-token").status_code == 404


@pytest.mark.parametrize("email", ["not an address", "ann@example.com"])
def test_rejected_sign_up_enqueues_nothing(
    app: Flask, client: FlaskClient, email: str
) -> None:
    from example_app.extensions import db
    from example_app.extensions import queue
    from example_app.models import Contact

    with app.app_context():
        db.session.add(Contact(email="ann@example.com"))
        db.session.commit()
    response = client.post("/sign-up", data={"email": email}, follow_redirects=True)
    assert 'class="flash error"' in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Contact.id))) == 1
        assert db.session.scalars(sa.select(queue.Task)).all() == []


def test_failed_email_stays_in_the_queue(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import example_app.tasks
    from example_app.extensions import db
    from example_app.extensions import queue
    from example_app.models import Contact

    def unreachable(to: str, subject: str, body: str) -> None:
        raise ConnectionError("mail server unreachable")

    monkeypatch.setattr(example_app.tasks, "send_email", unreachable)
    client.post("/sign-up", data={"email": "bob@example.com"})
    with app.app_context():
        assert queue.drain() == 1
        task = db.session.scalars(sa.select(queue.Task)).one()
        assert task.failed_nr == 1
        assert task.status == "queued"  # retried after retry_interval
        contact = db.session.scalars(sa.select(Contact)).one()
        assert contact.confirmation_sent is None
    page = client.get("/").get_data(as_text=True)
    assert "ConnectionError: mail server unreachable" in page


def test_monthly_report_streams_its_progress_and_result(
    app: Flask, client: FlaskClient
) -> None:
    from example_app.extensions import db
    from example_app.extensions import queue
    from example_app.models import Contact

    app.config["REPORT_DAY_SECONDS"] = 0
    with app.app_context():
        for day in (3, 3, 17):
            db.session.add(
                Contact(
                    email=f"c{day}-{len(db.session.new)}@example.com",
                    created=datetime.datetime(2026, 11, day, 12, tzinfo=UTC),
                )
            )
        db.session.commit()

    # Only the logged-in admin starts and follows reports.
    assert client.get("/reports/").status_code == 302
    assert client.get("/reports/1/events").status_code == 302
    client.post("/login", data={"password": "admin"})
    assert client.post("/reports/", data={"month": "nope"}).status_code == 400
    response = client.post("/reports/", data={"month": "2026-11"})
    assert response.status_code == 302
    task_id = int(response.headers["Location"].rsplit("/", 1)[1])
    page = client.get(f"/reports/{task_id}").get_data(as_text=True)
    assert f'data-events="/reports/{task_id}/events"' in page
    assert '<script src="/static/report.js">' in page
    assert "<script>" not in page  # nothing inline: CSP-friendly

    with app.app_context():
        assert queue.drain() == 1
    events = client.get(f"/reports/{task_id}/events")
    assert events.mimetype == "text/event-stream"
    body = events.get_data(as_text=True)
    assert "event: progress\nid: 1.succeeded.1." in body
    assert 'data: {"done":30,"total":30}' in body
    done = body.split("event: done\n", 1)[1]
    assert done.split("\n")[1] == (
        'data: {"state":"succeeded","result":{"month":"2026-11",'
        '"signups":3,"busiest_day":3}}'
    )
    page = client.get(f"/reports/{task_id}").get_data(as_text=True)
    assert "3 sign-ups in 2026-11" in page
