"""The app's own tables: the contacts who signed up, and the emails "sent"."""

from __future__ import annotations

import datetime
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from .extensions import Base


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Contact(Base):
    """Someone who signed up; confirmed once they follow the emailed link."""

    __tablename__ = "contact"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    token: Mapped[str] = mapped_column(
        sa.String(64), unique=True, default=lambda: secrets.token_urlsafe(24)
    )
    created: Mapped[datetime.datetime] = mapped_column(default=utcnow)
    #: Set by the email task's success callback.
    confirmation_sent: Mapped[datetime.datetime | None]
    #: Set when the contact follows the link in the email.
    confirmed: Mapped[datetime.datetime | None]


class OutboxEmail(Base):
    """An email the app "sent": this example keeps them instead of mailing them."""

    __tablename__ = "outbox_email"

    id: Mapped[int] = mapped_column(primary_key=True)
    to: Mapped[str] = mapped_column(sa.String(254))
    subject: Mapped[str] = mapped_column(sa.String(200))
    body: Mapped[str] = mapped_column(sa.Text)
    sent: Mapped[datetime.datetime] = mapped_column(default=utcnow)
