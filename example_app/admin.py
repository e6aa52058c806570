"""A one-password admin login, and the queue dashboard behind it."""

from __future__ import annotations

import hmac

from flask import abort
from flask import Blueprint
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from flask.typing import ResponseReturnValue

from .extensions import queue

bp = Blueprint("admin", __name__)


@queue.dashboard_auth
def is_admin() -> bool:
    """The dashboard (``/queue``) is for the logged-in admin; others log in first."""
    if not session.get("admin"):
        abort(redirect(url_for("admin.login", next=request.path)))
    return True


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if request.method == "POST":
        password = request.form.get("password", "")
        if hmac.compare_digest(password, current_app.config["ADMIN_PASSWORD"]):
            session["admin"] = True
            target = request.args.get("next", "")
            # Only paths on this site: never redirect to another host.
            if not target.startswith("/") or target.startswith("//"):
                target = url_for("plainqueue.overview")
            return redirect(target)
        flash("Wrong password.", "error")
    return render_template("login.html")


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    session.pop("admin", None)
    return redirect(url_for("contacts.index"))
