"""The dashboard: a blueprint of server-rendered pages to inspect the queue and
retry or delete tasks.

Off by default; ``PLAINQUEUE_DASHBOARD = True`` mounts it at
``PLAINQUEUE_DASHBOARD_URL``. Every request passes the app's authorisation
check first (``@queue.dashboard_auth`` or ``PLAINQUEUE_DASHBOARD_AUTH``);
without one, every URL answers 403. State-changing actions are POSTs with a
CSRF token: Flask-WTF's when the app uses ``CSRFProtect``, otherwise a token
signed with the app's ``SECRET_KEY`` and bound to the user's session. Every
response under the dashboard's URL, error pages and static files included,
carries :data:`SECURITY_HEADERS`: no page may frame it, and it runs no inline
script or style.
"""

from __future__ import annotations

import datetime
import hmac
import importlib
import secrets
import typing as t

from flask import abort
from flask import Blueprint
from flask import current_app
from flask import flash
from flask import g
from flask import make_response
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from flask.typing import ResponseReturnValue
from flask.wrappers import Response
from itsdangerous import BadData
from itsdangerous import URLSafeTimedSerializer
from werkzeug.exceptions import HTTPException

from .clock import utcnow
from .dashboard_chart import chart
from .dashboard_chart import CHART_PERIOD
from .dashboard_ops import add_operation_views
from .dashboard_ops import MISSING_TABLES
from .dashboard_ops import unless_missing
from .exceptions import ConfigurationError
from .exceptions import PlainQueueError
from .info import format_age
from .info import parse_id
from .info import Paused
from .info import STATES
from .info import TaskInfo
from .schema import TaskState

if t.TYPE_CHECKING:
    from flask import Flask

    from .extension import PlainQueue

#: Tasks per page in the list.
PAGE_SIZE = 50
#: How long a CSRF token of our own stays valid (seconds).
CSRF_MAX_AGE = 8 * 3600
_CSRF_SESSION_KEY = "_plainqueue_csrf"
_CSRF_SALT = "flask-plainqueue-dashboard-csrf"

FORBIDDEN_NO_AUTH = """\
The flask-plainqueue dashboard is mounted but no authorisation check is
registered, so every dashboard page is refused.

Register a function that returns True for users allowed to see and change the
queue, either with the decorator:

    @queue.dashboard_auth
    def can_see_queue() -> bool:
        return current_user.is_authenticated and current_user.is_admin

or with the configuration key PLAINQUEUE_DASHBOARD_AUTH = can_see_queue.
"""

FORBIDDEN_DENIED = "You are not allowed to see the task queue dashboard.\n"

#: Sent with every dashboard response. ``frame-ancestors 'none'`` (and the
#: older ``X-Frame-Options``) keep any page, same-site ones included, from
#: framing the Retry and Delete buttons; ``default-src 'self'`` refuses inline
#: scripts and styles, so injected markup could not run.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none';"
        " form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}
#: Seconds between reloads when the auto-refresh toggle is on.
AUTO_REFRESH_SECONDS = 5

_ERRORS = {
    400: ("Bad request", "The request was not understood."),
    403: ("Forbidden", FORBIDDEN_DENIED),
    404: (
        "Not found",
        "There is nothing here: the task may have finished or been deleted.",
    ),
    405: ("Method not allowed", "This address does not take this method."),
}


def make_blueprint(queue: PlainQueue, name: str = "plainqueue") -> Blueprint:
    """The dashboard blueprint for ``queue``; register it with a ``url_prefix``.

    ``init_app`` does this when ``PLAINQUEUE_DASHBOARD`` is true.

    .. versionadded:: 0.1
    """
    bp = Blueprint(
        name,
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )

    def existing(task_id: str) -> TaskInfo:
        key = parse_id(task_id)
        info = None if key is None else queue.get(key)
        if info is None:
            abort(404)
        return info

    @bp.before_request
    def check_access() -> ResponseReturnValue | None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        # Per-app configuration is more specific than the queue-wide decorator.
        check = queue.dashboard_check()
        if check is None:
            return _error_page(403, FORBIDDEN_NO_AUTH, nav=False)
        if not check():
            return _error_page(403, FORBIDDEN_DENIED, nav=False)
        if request.method == "POST":
            _check_csrf(app)
        return None

    @bp.context_processor
    def helpers() -> dict[str, t.Any]:
        return {
            "plainqueue_csrf_token": _csrf_token,
            "states": STATES,
            "age": _age,
            "when": _when,
            "back_url": queue.settings().dashboard_back_url,
            "refresh_seconds": AUTO_REFRESH_SECONDS,
            "here": _here,
        }

    @bp.after_request
    def secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    @bp.errorhandler(400)
    @bp.errorhandler(403)
    @bp.errorhandler(404)
    @bp.errorhandler(405)
    def error(exc: HTTPException) -> ResponseReturnValue:
        code = exc.code or 500
        default = _ERRORS[code][1]
        # abort(400, "why") says why; Werkzeug's stock descriptions do not.
        description = exc.description
        if description == type(exc).description:
            description = default
        # A user refused (by an auth check's abort(403), say) sees no links.
        page = _error_page(code, description or default, nav=code != 403)
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            return page, {"Allow": ", ".join(allowed)}
        return page

    @bp.route("/", strict_slashes=False)
    def overview() -> ResponseReturnValue:
        status = queue.status()
        per_queue = {
            name: {s: sum(c[s] for c in names.values()) for s in STATES}
            for name, names in status.queues.items()
        }
        stats = unless_missing(queue, lambda: queue.stats(since=CHART_PERIOD))
        charted = request.args.get("chart", "").strip() or None
        if stats is not None and charted not in stats.names:
            charted = None
        return render_template(
            "plainqueue/overview.html",
            status=status,
            per_queue=per_queue,
            stats=stats,
            charted=charted,
            chart=None if stats is None else chart(stats, charted),
        )

    @bp.route("/tasks")
    def tasks() -> ResponseReturnValue:
        state_arg = request.args.get("state", "")
        states: list[TaskState] | None
        if state_arg:
            try:
                states = [TaskState(state_arg)]
            except ValueError:
                abort(400)
        else:
            states = None
        name = request.args.get("name", "").strip() or None
        page = request.args.get("page", 1, type=int) or 1
        page = max(1, page)
        total = queue.count(state=states, name=name)
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(page, pages)
        rows = queue.tasks(
            state=states, name=name, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
        )
        return render_template(
            "plainqueue/list.html",
            tasks=rows,
            state=state_arg,
            name=name or "",
            names=queue.names(),
            page=page,
            pages=pages,
            total=total,
            dead=queue.count(state=TaskState.DEAD, name=name)
            if state_arg == "dead"
            else 0,
        )

    @bp.route("/tasks/<task_id>")
    def detail(task_id: str) -> ResponseReturnValue:
        info = existing(task_id)
        return render_template(
            "plainqueue/detail.html",
            task=info,
            reason=unless_missing(queue, lambda: queue.why(info.id)),
            missing=MISSING_TABLES,
        )

    @bp.route("/tasks/<task_id>/retry", methods=["POST"])
    def retry(task_id: str) -> ResponseReturnValue:
        info = existing(task_id)
        try:
            done = queue.retry(info.id)
        except PlainQueueError as exc:
            flash(str(exc), "error")
            return redirect(url_for(".detail", task_id=task_id))
        if done:
            flash(f"Task {info.id} ({info.name}) will run again now.", "ok")
        else:
            flash(f"Task {info.id} is running; it cannot be retried now.", "error")
        return redirect(url_for(".detail", task_id=task_id))

    @bp.route("/tasks/<task_id>/delete", methods=["POST"])
    def delete(task_id: str) -> ResponseReturnValue:
        info = existing(task_id)
        if queue.delete(info.id):
            flash(f"Task {info.id} ({info.name}) was deleted.", "ok")
            return redirect(url_for(".tasks", state=info.state.value))
        flash(f"Task {info.id} is running; it cannot be deleted now.", "error")
        return redirect(url_for(".detail", task_id=task_id))

    @bp.route("/periodic")
    def periodic() -> ResponseReturnValue:
        return render_template(
            "plainqueue/periodic.html",
            periodic=queue.periodic_tasks(),
            paused=unless_missing(queue, queue.paused) or Paused(),
        )

    @bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def unknown(rest: str) -> ResponseReturnValue:
        # Any other address under the dashboard gets the dashboard's 404 (and
        # a GET of a POST-only one its 405), behind its auth and headers,
        # instead of a routing error the blueprint would never see.
        adapter = current_app.url_map.bind_to_environ(request.environ)
        for method in ("GET", "POST"):
            if method == request.method:
                continue
            try:
                endpoint, _ = adapter.match(method=method)
            except HTTPException:
                continue
            if endpoint != request.endpoint:
                abort(405, valid_methods=[method])
        abort(404)

    @bp.route("/retry-failed", methods=["POST"])
    def retry_failed() -> ResponseReturnValue:
        name = request.form.get("name", "").strip() or None
        retried = queue.retry_failed(name=name)
        scope = f" of {name}" if name else ""
        flash(f"{len(retried)} dead task(s){scope} will run again now.", "ok")
        return redirect(url_for(".tasks", state="dead", name=name or None))

    add_operation_views(bp, queue)
    return bp


def _here() -> str:
    """The current page's address (from the app's root, with its query), for
    a form's ``back`` field."""
    return request.script_root + request.full_path.rstrip("?")


def _error_page(code: int, message: str, *, nav: bool = True) -> Response:
    title = _ERRORS[code][0]
    page = render_template(
        "plainqueue/error.html", code=code, title=title, message=message, nav=nav
    )
    return make_response(page, code)


# -- CSRF ---------------------------------------------------------------------


def _serializer(app: Flask) -> URLSafeTimedSerializer:
    if not app.secret_key:
        raise ConfigurationError(
            "The flask-plainqueue dashboard signs its CSRF tokens with the app's"
            " secret key: set SECRET_KEY (app.secret_key), or use Flask-WTF's"
            " CSRFProtect(app)."
        )
    return URLSafeTimedSerializer(app.secret_key, salt=_CSRF_SALT)


def _csrf_token() -> str:
    """The token for the dashboard's forms (Flask-WTF's if the app has it)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if "csrf" in app.extensions:
        # Flask-WTF is optional (and untyped): look it up only when in use.
        csrf_module = importlib.import_module("flask_wtf.csrf")
        return t.cast(str, csrf_module.generate_csrf())
    serializer = _serializer(app)
    if _CSRF_SESSION_KEY not in session:
        session[_CSRF_SESSION_KEY] = secrets.token_urlsafe(24)
    return serializer.dumps(session[_CSRF_SESSION_KEY])


def _check_csrf(app: Flask) -> None:
    """Refuse a POST (400) whose token is missing, forged, expired, or from
    another session."""
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        # CSRFProtect checks every POST before views run, unless the app turned
        # that off (WTF_CSRF_CHECK_DEFAULT = False): then check here.
        if not g.get("csrf_valid"):
            csrf.protect()
        return
    serializer = _serializer(app)
    token = request.form.get("csrf_token", "")
    expected = session.get(_CSRF_SESSION_KEY)
    try:
        value = serializer.loads(token, max_age=CSRF_MAX_AGE)
    except BadData:
        abort(400, "The form's CSRF token is missing, invalid or expired; reload it.")
    if not isinstance(expected, str) or not isinstance(value, str):
        abort(400, "The form's CSRF token does not belong to this session.")
    if not hmac.compare_digest(value, expected):
        abort(400, "The form's CSRF token does not belong to this session.")


# -- formatting ---------------------------------------------------------------


def _when(value: datetime.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(value: datetime.datetime | float | None) -> str:
    """``3m 5s ago`` / ``in 2h 1m`` for a datetime; ``3m 5s`` for seconds."""
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return format_age(value)
    seconds = (utcnow() - value).total_seconds()
    if seconds >= 0:
        return f"{format_age(seconds)} ago"
    return f"in {format_age(-seconds)}"
