"""The app's tasks, imported through ``PLAINQUEUE_TASKS`` so every worker knows
them."""

from __future__ import annotations

import calendar
import datetime
import logging
import time
import typing as t

import sqlalchemy as sa
from flask import current_app

from flask_plainqueue import current_task

from .extensions import db
from .extensions import queue
from .models import Contact
from .models import OutboxEmail
from .models import utcnow

logger = logging.getLogger(__name__)


def send_email(to: str, subject: str, body: str) -> None:
    """ "Send" an email: store it in the outbox and log it. A real app would
    talk to its mail server here."""
    db.session.add(OutboxEmail(to=to, subject=subject, body=body))
    db.session.commit()
    logger.info("Sent %r to %s", subject, to)


def mark_sent(data: dict[str, t.Any]) -> None:
    """Success callback: its write commits together with the task's removal."""
    contact = db.session.get(Contact, data["contact_id"])
    if contact is not None:
        contact.confirmation_sent = utcnow()


def report_failure(data: dict[str, t.Any], error: BaseException) -> None:
    """Failure callback: runs after each failed attempt."""
    logger.warning("Could not email contact %s: %s", data["contact_id"], error)


@queue.task(
    name="example_app.send_confirmation",
    queue="emails",
    success=mark_sent,
    failure=report_failure,
    max_retries=5,
    retry_interval=10.0,
)
def send_confirmation(data: dict[str, t.Any]) -> None:
    """Email a new contact the link that confirms their address."""
    contact = db.session.get(Contact, data["contact_id"])
    if contact is None:  # deleted since signing up: nothing to send
        return
    send_email(
        contact.email,
        "Please confirm your email address",
        f"Follow this link to confirm your sign-up:\n\n{data['confirm_url']}\n",
    )


@queue.task(name="example_app.monthly_report", queue="reports", keep_succeeded=3600)
def monthly_report(data: dict[str, t.Any]) -> dict[str, t.Any]:
    """Count a month's sign-ups day by day, reporting progress as it goes; the
    result is kept for an hour for the report page (``keep_succeeded``)."""
    first = datetime.date.fromisoformat(f"{data['month']}-01")
    days = calendar.monthrange(first.year, first.month)[1]
    # Slow on purpose, so the progress bar has something to show.
    pause = current_app.config.get("REPORT_DAY_SECONDS", 0.1)
    per_day = []
    for day in range(days):
        start = datetime.datetime.combine(
            first + datetime.timedelta(days=day), datetime.time(), datetime.timezone.utc
        )
        per_day.append(
            db.session.scalar(
                sa.select(sa.func.count(Contact.id)).where(
                    Contact.created >= start,
                    Contact.created < start + datetime.timedelta(days=1),
                )
            )
            or 0
        )
        current_task.report_progress({"done": day + 1, "total": days})
        time.sleep(pause)
    return {
        "month": data["month"],
        "signups": sum(per_day),
        "busiest_day": per_day.index(max(per_day)) + 1 if any(per_day) else None,
    }
