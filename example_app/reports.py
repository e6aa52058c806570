"""Monthly reports for the admin: a form starts the report task, and its page
shows a progress bar fed by ``queue.stream`` and then the result."""

from __future__ import annotations

import datetime
import functools
import typing as t
from collections.abc import Callable

from flask import abort
from flask import Blueprint
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from flask.typing import ResponseReturnValue

from .extensions import queue
from .tasks import monthly_report

bp = Blueprint("reports", __name__, url_prefix="/reports")

_View = t.TypeVar("_View", bound=Callable[..., ResponseReturnValue])


def login_required(view: _View) -> _View:
    """The reports are for the logged-in admin (admin.py), stream included:
    ``queue.stream`` shows whatever task it is given."""

    @functools.wraps(view)
    def guarded(**kwargs: t.Any) -> ResponseReturnValue:
        if not session.get("admin"):
            return redirect(url_for("admin.login", next=request.path))
        return view(**kwargs)

    return t.cast(_View, guarded)


@bp.get("/")
@login_required
def new_report() -> ResponseReturnValue:
    return render_template(
        "reports.html", month=datetime.date.today().strftime("%Y-%m")
    )


@bp.post("/")
@login_required
def start_report() -> ResponseReturnValue:
    month = request.form.get("month", "")
    try:
        datetime.date.fromisoformat(f"{month}-01")
    except ValueError:
        abort(400)
    task_id = queue.perform(monthly_report, {"month": month})
    return redirect(url_for(".report", task_id=task_id))


@bp.get("/<int:task_id>")
@login_required
def report(task_id: int) -> ResponseReturnValue:
    task = queue.get(task_id)
    if task is not None and task.name != monthly_report.name:
        abort(404)
    return render_template("report.html", task_id=task_id, task=task)


@bp.get("/<int:task_id>/events")
@login_required
def report_events(task_id: int) -> ResponseReturnValue:
    return queue.stream(task_id)
