"""The sign-up form, the confirmation link, and pages that show the contacts,
the queue and the outbox."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue

from .extensions import db
from .extensions import queue
from .models import Contact
from .models import OutboxEmail
from .models import utcnow
from .tasks import send_confirmation

bp = Blueprint("contacts", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    contacts = db.session.scalars(sa.select(Contact).order_by(Contact.id.desc()))
    # Succeeded emails are deleted and kept reports have their own pages:
    # what is left waits, runs, or failed.
    tasks = db.session.scalars(
        sa.select(queue.Task)
        .where(queue.Task.status != "succeeded")
        .order_by(queue.Task.id)
    )
    return render_template("index.html", contacts=contacts, tasks=tasks)


@bp.post("/sign-up")
def sign_up() -> ResponseReturnValue:
    email = request.form.get("email", "").strip().lower()
    if "@" not in email:
        flash("Please enter an email address.", "error")
        return redirect(url_for(".index"))
    if db.session.scalar(sa.select(Contact.id).where(Contact.email == email)):
        flash(f"{email} has already signed up.", "error")
        return redirect(url_for(".index"))
    contact = Contact(email=email)
    db.session.add(contact)
    db.session.flush()  # assigns contact.id
    # The task joins this transaction: both are stored by the commit below, or
    # neither is.
    queue.perform(
        send_confirmation,
        {
            "contact_id": contact.id,
            "confirm_url": url_for(".confirm", token=contact.token, _external=True),
        },
        commit=False,
    )
    db.session.commit()
    flash(f"Thanks! We've sent a confirmation link to {email}.", "success")
    return redirect(url_for(".index"))


@bp.get("/confirm/<token>")
def confirm(token: str) -> ResponseReturnValue:
    contact = db.first_or_404(sa.select(Contact).where(Contact.token == token))
    if contact.confirmed is None:
        contact.confirmed = utcnow()
        db.session.commit()
    flash(f"{contact.email} is confirmed.", "success")
    return redirect(url_for(".index"))


@bp.get("/outbox")
def outbox() -> ResponseReturnValue:
    emails = db.session.scalars(sa.select(OutboxEmail).order_by(OutboxEmail.id.desc()))
    return render_template("outbox.html", emails=emails)
