"""The dashboard's operations pages: the Workers page, and the Pause and
Resume buttons (queues and task names) that the other pages carry. Like the
rest of the dashboard it uses only :class:`~flask_plainqueue.PlainQueue`'s
public API; :func:`~flask_plainqueue.dashboard.make_blueprint` adds these
views, behind its authorisation check and CSRF protection."""

from __future__ import annotations

import typing as t
from collections.abc import Callable

import sqlalchemy as sa
from flask import abort
from flask import Blueprint
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue

from .exceptions import PlainQueueError

if t.TYPE_CHECKING:
    from .extension import PlainQueue

#: What a pause form may name.
PAUSE_KINDS = ("queue", "task")
#: Shown instead of the workers, pauses or a reason when their tables are
#: missing.
MISSING_TABLES = (
    "The workers and pauses tables do not exist yet: create them with"
    " db.create_all() or your migrations ('flask db upgrade'). Until then workers"
    " are not listed and pauses are ignored."
)

_T = t.TypeVar("_T")


def unless_missing(queue: PlainQueue, call: Callable[[], _T]) -> _T | None:
    """``call()``, or ``None`` when a table it reads does not exist (an app
    upgraded without its migration still shows its tasks)."""
    try:
        return call()
    except sa.exc.DBAPIError as exc:
        if queue.store().is_missing_table(exc):
            return None
        raise


def add_operation_views(bp: Blueprint, queue: PlainQueue) -> None:
    """Add the Workers page and the pause and resume actions to ``bp``."""

    @bp.route("/workers")
    def workers() -> ResponseReturnValue:
        return render_template(
            "plainqueue/workers.html",
            workers=unless_missing(queue, queue.workers),
            paused=unless_missing(queue, queue.paused),
            timeout=queue.settings().worker_timeout,
            missing=MISSING_TABLES,
        )

    @bp.route("/pause", methods=["POST"])
    def pause() -> ResponseReturnValue:
        return _change(queue, pause=True)

    @bp.route("/resume", methods=["POST"])
    def resume() -> ResponseReturnValue:
        return _change(queue, pause=False)


def _change(queue: PlainQueue, *, pause: bool) -> ResponseReturnValue:
    kind = request.form.get("kind", "")
    if kind not in PAUSE_KINDS:
        abort(400, "Say what to pause or resume: kind must be 'queue' or 'task'.")
    name = request.form.get("name", "").strip()
    target = {kind: name}
    label = f"{kind.capitalize()} {name!r}"
    change = queue.pause if pause else queue.resume
    try:
        changed = unless_missing(queue, lambda: change(**target))
    except PlainQueueError as exc:
        flash(str(exc), "error")
        return redirect(_back())
    if changed is None:
        flash(MISSING_TABLES, "error")
        return redirect(_back())
    if pause and changed:
        flash(
            f"{label} is paused: workers stop claiming its tasks within one poll"
            " interval; running tasks finish.",
            "ok",
        )
    elif pause:
        flash(f"{label} was already paused.", "ok")
    elif changed:
        flash(f"{label} is resumed.", "ok")
    else:
        flash(f"{label} was not paused.", "ok")
    return redirect(_back())


def _back() -> str:
    """The dashboard page the form came from (its ``back`` field), else the
    overview: only a path under the dashboard's own URL, so the form cannot
    send the browser elsewhere."""
    home = url_for(".overview")
    back = request.form.get("back", "")
    if back.startswith(home) and "//" not in back and "\\" not in back:
        return back
    return home
