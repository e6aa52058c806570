"""flask-plainqueue's side of docs/coming-from.rst: the task, enqueueing,
retries and a periodic task that the page compares with Celery, RQ and Huey.
tests/integration/test_docs_coming_from.py runs them, and
docs/examples/test_coming_from.py is the page's test example."""

from __future__ import annotations

# [setup]
import typing as t

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue

db = SQLAlchemy()
queue = PlainQueue(db=db)


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///app.db"
    app.config.update(test_config or {})
    db.init_app(app)
    queue.init_app(app)
    with app.app_context():
        db.create_all()
    return app


# [/setup]


#: Stands in for an email service.
outbox: list[str] = []

#: Stands in for a report service: the answer of each call, "ok", "down" or
#: "bad".
report_answers: list[str] = []

#: What the periodic task did.
cleanups: list[str] = []


def download_report(report_id: int) -> None:
    answer = report_answers.pop(0) if report_answers else "ok"
    if answer == "down":
        raise ConnectionError("report service unreachable")
    if answer == "bad":
        raise ValueError(f"no report {report_id}")


# [task]
@queue.task(name="send_email")
def send_email(data: dict[str, str]) -> None:
    outbox.append(data["to"])  # runs in an app context: db.session works


# [/task]


def sign_up(email: str) -> None:
    # [enqueue]
    send_email.perform({"to": email})  # or queue.perform(send_email, {...})
    # [/enqueue]


# [retries]
@queue.task(
    name="fetch_report",
    max_retries=3,  # at most 4 runs
    retry_interval=10.0,  # 10 s apart
    retry_on=(ConnectionError,),  # any other exception: dead at once
)
def fetch_report(data: dict[str, int]) -> None:
    download_report(data["report_id"])


# [/retries]


# [periodic]
@queue.periodic(cron="0 3 * * *", name="nightly_cleanup")
def nightly_cleanup() -> None:
    cleanups.append("done")  # 03:00 UTC, once however many workers run


# [/periodic]
