"""The app's tasks, imported through ``PLAINQUEUE_TASKS`` so every worker knows
them."""

from __future__ import annotations

import logging
import typing as t

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
