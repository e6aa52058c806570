"""The dashboard through Flask's test client: mounting, authorisation, 403s,
CSRF, escaping, and each page and action, on both databases. Its settings and
templates are checked in ``tests/unit/test_dashboard_setup.py``, and in a real
browser in ``tests/processes/test_browser.py``."""

from __future__ import annotations

import datetime
import importlib.util
import re
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from flask import Flask
from flask.testing import FlaskClient
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import ConfigurationError
from flask_plainqueue import dashboard
from flask_plainqueue import PlainQueue
from flask_plainqueue.claims import ClaimRequest

#: The repository's root (docs/ and example_app/ are there).
ROOT = Path(__file__).parents[2]
XSS_DATA = {
    "note": "<script>window.__xss = 1</script>",
    "img": "<img src=x onerror=alert(1)>",
}
XSS_ERROR = "<img src=x onerror=window.__xss=2>"


class Dash(t.NamedTuple):
    app: Flask
    db: SQLAlchemy
    queue: PlainQueue
    client: FlaskClient

    def token(self, path: str) -> str:
        """The CSRF token in the page at ``path``."""
        page = self.client.get(path)
        assert page.status_code == 200, page.data
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match, page.text
        return match.group(1)

    def status(self, task_id: int) -> str | None:
        """The stored ``status`` column (``None`` once the row is gone)."""
        table = self.queue.Task.__table__
        with self.db.engine.connect() as conn:
            return conn.execute(
                sa.select(table.c.status).where(table.c.id == task_id)
            ).scalar()

    def dead(self, data: t.Any = None, name: str = "d.fail") -> int:
        task_id = self.queue.perform(name, data)
        self.queue.drain()
        assert self.status(task_id) == "dead"
        return task_id


MakeDash = Callable[..., Dash]


@pytest.fixture
def make_dash(database_uri: str, tmp_path: Path) -> Iterator[MakeDash]:
    made: list[Dash] = []
    contexts: list[t.Any] = []

    def make(*, allow: bool | None = True, **config: t.Any) -> Dash:
        config.setdefault("PLAINQUEUE_DASHBOARD", True)
        app, db, queue = create_test_app(
            database_uri, tmp_path / f"instance{len(made)}", **config
        )
        if allow is not None:

            @queue.dashboard_auth
            def check() -> bool:
                return allow

        @queue.task(name="d.ok")
        def ok(data: t.Any) -> None:
            pass

        @queue.task(name="d.fail", max_retries=0)
        def fail(data: t.Any) -> None:
            if isinstance(data, dict) and "error" in data:
                raise ValueError(data["error"])
            raise ValueError("it broke")

        @queue.task(name="d.other", max_retries=0)
        def other(data: t.Any) -> None:
            raise KeyError("other")

        ctx = app.app_context()
        ctx.push()
        contexts.append(ctx)
        db.drop_all()
        db.create_all()
        dash = Dash(app, db, queue, app.test_client())
        made.append(dash)
        return dash

    yield make
    while made:
        dash = made.pop()
        dash.db.session.remove()
        dash.db.drop_all()
        dash.db.engine.dispose()
        contexts.pop().pop()


@pytest.fixture
def dash(make_dash: MakeDash) -> Dash:
    return make_dash()


# -- mounting and access ----------------------------------------------------------


def test_off_by_default(make_dash: MakeDash) -> None:
    d = make_dash(PLAINQUEUE_DASHBOARD=False)
    assert d.client.get("/queue/").status_code == 404
    assert "plainqueue" not in d.app.blueprints


def test_custom_url(make_dash: MakeDash) -> None:
    d = make_dash(PLAINQUEUE_DASHBOARD_URL="/admin/tasks/")
    assert d.client.get("/admin/tasks/").status_code == 200
    assert d.client.get("/queue/").status_code == 404


def _every_url(d: Dash) -> list[tuple[str, str]]:
    task_id = d.queue.perform("d.ok", 1, delay=60)
    return [
        ("GET", "/queue/"),
        ("GET", "/queue/tasks"),
        ("GET", "/queue/tasks?state=dead"),
        ("GET", f"/queue/tasks/{task_id}"),
        ("GET", "/queue/tasks/999"),
        ("GET", "/queue/static/plainqueue/plainqueue.css"),
        ("GET", "/queue/periodic"),
        ("GET", "/queue/nowhere"),
        ("POST", f"/queue/tasks/{task_id}/retry"),
        ("POST", f"/queue/tasks/{task_id}/delete"),
        ("POST", "/queue/retry-failed"),
    ]


def test_without_an_auth_check_every_url_is_403(make_dash: MakeDash) -> None:
    d = make_dash(allow=None)
    for method, url in _every_url(d):
        response = d.client.open(url, method=method)
        assert response.status_code == 403, (method, url)
        assert "@queue.dashboard_auth" in response.text
        assert "PLAINQUEUE_DASHBOARD_AUTH" in response.text
    assert d.queue.Task  # nothing was changed by the POSTs
    table = d.queue.Task.__table__
    with d.db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 1


def test_a_refusing_check_is_403_everywhere(make_dash: MakeDash) -> None:
    d = make_dash(allow=False)
    for method, url in _every_url(d):
        response = d.client.open(url, method=method)
        assert response.status_code == 403, (method, url)
        assert "not allowed" in response.text


def test_auth_from_config(make_dash: MakeDash) -> None:
    seen: list[str] = []

    def check() -> bool:
        from flask import request

        seen.append(request.path)
        return request.headers.get("X-Admin") == "yes"

    d = make_dash(allow=None, PLAINQUEUE_DASHBOARD_AUTH=check)
    assert d.client.get("/queue/").status_code == 403
    assert d.client.get("/queue/", headers={"X-Admin": "yes"}).status_code == 200
    assert seen == ["/queue/", "/queue/"]


def test_auth_may_abort_with_a_redirect(make_dash: MakeDash) -> None:
    d = make_dash(allow=None)

    @d.queue.dashboard_auth
    def to_login() -> bool:
        from flask import abort
        from flask import redirect

        abort(redirect("/login"))

    response = d.client.get("/queue/tasks")
    assert response.status_code == 302
    assert response.location == "/login"


# -- pages --------------------------------------------------------------------------


def test_overview(dash: Dash) -> None:
    dash.dead()
    dash.queue.perform("d.ok", 1)
    dash.queue.perform("d.ok", 2, delay=3600)
    page = dash.client.get("/queue/")
    assert page.status_code == 200
    assert '<meta name="viewport"' in page.text
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text))
    assert "1 pending 1 scheduled 0 running 0 succeeded 1 dead" in text
    assert "d.fail 0 0 0 0 1" in text and "d.ok 1 1 0 0 0" in text
    assert "Oldest pending due for" in text
    # The drain wrote its counts: the chart shows the dead attempt.
    assert "0 succeeded and 1 failed (1 dead)" in text
    css = dash.client.get("/queue/static/plainqueue/plainqueue.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    css.close()


def test_list_filters_and_pages(dash: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard, "PAGE_SIZE", 2)
    dead = [dash.dead(n) for n in range(3)]
    other = dash.dead(name="d.other")
    waiting = dash.queue.perform("d.ok", 9, delay=3600)

    def ids(url: str) -> list[int]:
        page = dash.client.get(url)
        assert page.status_code == 200, url
        return [
            int(i) for i in re.findall(r'<td><a href="/queue/tasks/(\d+)">', page.text)
        ]

    assert ids("/queue/tasks?state=scheduled") == [waiting]
    first = ids("/queue/tasks?state=dead")
    second = ids("/queue/tasks?state=dead&page=2")
    third = ids("/queue/tasks?state=dead&page=3")
    assert len(first) == len(second) == 2
    assert third == second  # past the end: the last page
    assert sorted(first + second) == sorted([*dead, other])
    named = ids("/queue/tasks?state=dead&name=d.fail")
    named += ids("/queue/tasks?state=dead&name=d.fail&page=2")
    assert sorted(named) == sorted(dead)
    assert ids("/queue/tasks?name=d.other") == [other]
    page = dash.client.get("/queue/tasks?state=dead")
    assert "page 1 of 2" in page.text and 'rel="next"' in page.text
    assert "ValueError: it broke" in page.text
    assert dash.client.get("/queue/tasks?state=nonsense").status_code == 400


def test_detail(dash: Dash) -> None:
    task_id = dash.dead({"email": "a@example.com", "tags": ["x", "y"]})
    page = dash.client.get(f"/queue/tasks/{task_id}")
    assert page.status_code == 200
    assert "  &#34;email&#34;: &#34;a@example.com&#34;" in page.text
    assert "Traceback (most recent call last):" in page.text
    assert "ValueError: it broke" in page.text
    assert 'id="pq-retry"' in page.text and 'id="pq-delete"' in page.text
    assert dash.client.get("/queue/tasks/424242").status_code == 404
    # Ids are parsed at the URL: anything that cannot be one is not found (never
    # a database error).
    for bad in ("abc", "0", "-1", "1.0", str(2**63), "9" * 30):
        assert dash.client.get(f"/queue/tasks/{bad}").status_code == 404, bad


def test_task_data_and_errors_are_escaped(dash: Dash) -> None:
    task_id = dash.dead({**XSS_DATA, "error": XSS_ERROR})
    for url in (f"/queue/tasks/{task_id}", "/queue/tasks?state=dead"):
        page = dash.client.get(url)
        assert "<script>window" not in page.text
        assert "<img src=x" not in page.text
        assert "&lt;img src=x onerror=window.__xss=2&gt;" in page.text
    detail = dash.client.get(f"/queue/tasks/{task_id}")
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in detail.text


# -- actions and CSRF ----------------------------------------------------------------


def test_retry_of_a_unique_task_whose_key_is_taken_is_explained(dash: Dash) -> None:
    dead = dash.queue.perform("d.fail", 1, unique_key="k")
    dash.queue.drain()
    dash.queue.perform("d.fail", 2, unique_key="k", delay=3600)
    token = dash.token(f"/queue/tasks/{dead}")
    response = dash.client.post(
        f"/queue/tasks/{dead}/retry",
        data={"csrf_token": token},
        follow_redirects=True,
    )
    assert response.status_code == 200
    assert "another task with that key is waiting" in response.text
    assert dash.status(dead) == "dead"


def test_retry_and_delete(dash: Dash) -> None:
    task_id = dash.dead()
    token = dash.token(f"/queue/tasks/{task_id}")
    response = dash.client.post(
        f"/queue/tasks/{task_id}/retry", data={"csrf_token": token}
    )
    assert response.status_code == 302
    assert response.location == f"/queue/tasks/{task_id}"
    assert dash.status(task_id) == "queued"
    page = dash.client.get(response.location)
    assert f"Task {task_id} (d.fail) will run again now." in page.text

    response = dash.client.post(
        f"/queue/tasks/{task_id}/delete", data={"csrf_token": token}
    )
    assert response.status_code == 302
    assert dash.status(task_id) is None
    assert "was deleted" in dash.client.get(response.location).text
    missing = dash.client.post(
        f"/queue/tasks/{task_id}/retry", data={"csrf_token": token}
    )
    assert missing.status_code == 404


def test_running_task_is_neither_retried_nor_deleted(dash: Dash) -> None:
    task_id = dash.queue.perform("d.ok", 1)
    store = dash.queue.store()
    now = store.clock()
    claimed = store.claim(
        ClaimRequest(
            owner="w",
            names=["d.ok"],
            batch_sizes={"d.ok": 1},
            now=now,
            until=now + datetime.timedelta(minutes=5),
        )
    )
    assert [c.id for c in claimed] == [task_id]
    page = dash.client.get(f"/queue/tasks/{task_id}")
    assert "running" in page.text and 'id="pq-retry"' not in page.text
    waiting = dash.queue.perform("d.ok", 2, delay=60)
    token = dash.token(f"/queue/tasks/{waiting}")
    for action in ("retry", "delete"):
        response = dash.client.post(
            f"/queue/tasks/{task_id}/{action}",
            data={"csrf_token": token},
            follow_redirects=True,
        )
        assert f"Task {task_id} is running; it cannot be" in response.text
    assert dash.status(task_id) == "queued"


def test_retry_all_failed_of_a_name(dash: Dash) -> None:
    fails = [dash.dead(n) for n in range(2)]
    other = dash.dead(name="d.other")
    page = dash.client.get("/queue/tasks?state=dead&name=d.fail")
    assert "Retry all 2 dead of d.fail" in page.text
    token = dash.token("/queue/tasks?state=dead&name=d.fail")
    response = dash.client.post(
        "/queue/retry-failed", data={"csrf_token": token, "name": "d.fail"}
    )
    assert response.status_code == 302
    assert [dash.status(i) for i in fails] == ["queued", "queued"]
    assert dash.status(other) == "dead"
    assert "2 dead task(s) of d.fail will run again now." in (
        dash.client.get(response.location).text
    )


def test_posts_without_a_valid_token_are_refused(dash: Dash, tmp_path: Path) -> None:
    task_id = dash.dead()
    url = f"/queue/tasks/{task_id}/delete"
    assert dash.client.post(url).status_code == 400
    assert dash.client.post(url, data={"csrf_token": "forged"}).status_code == 400
    # A token of another session (another user's browser) does not work here.
    other = dash.app.test_client()
    page = other.get(f"/queue/tasks/{task_id}")
    foreign = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert foreign
    dash.token(f"/queue/tasks/{task_id}")  # this session has a token of its own
    assert (
        dash.client.post(url, data={"csrf_token": foreign.group(1)}).status_code == 400
    )
    # Signed with another secret key.
    from itsdangerous import URLSafeTimedSerializer

    with dash.client.session_transaction() as session:
        nonce = session["_plainqueue_csrf"]
    wrong_key = URLSafeTimedSerializer("other", salt=dashboard._CSRF_SALT).dumps(nonce)
    assert dash.client.post(url, data={"csrf_token": wrong_key}).status_code == 400
    assert dash.client.get(url).status_code == 405
    assert dash.status(task_id) == "dead"


def test_expired_token_is_refused(dash: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    task_id = dash.dead()
    token = dash.token(f"/queue/tasks/{task_id}")
    monkeypatch.setattr(dashboard, "CSRF_MAX_AGE", -1)
    response = dash.client.post(
        f"/queue/tasks/{task_id}/delete", data={"csrf_token": token}
    )
    assert response.status_code == 400
    assert dash.status(task_id) == "dead"


def test_no_secret_key_is_a_clear_error(make_dash: MakeDash) -> None:
    d = make_dash(SECRET_KEY=None)
    task_id = d.dead()
    with pytest.raises(ConfigurationError, match="set SECRET_KEY"):
        d.client.get(f"/queue/tasks/{task_id}")


@pytest.mark.parametrize("check_default", [True, False])
def test_flask_wtf_csrf_is_used_when_present(
    make_dash: MakeDash, check_default: bool
) -> None:
    csrf_module = pytest.importorskip("flask_wtf.csrf")
    d = make_dash(WTF_CSRF_CHECK_DEFAULT=check_default)
    csrf_module.CSRFProtect(d.app)
    task_id = d.dead()
    token = d.token(f"/queue/tasks/{task_id}")
    with d.client.session_transaction() as session:
        assert "_plainqueue_csrf" not in session  # Flask-WTF's token, not ours
        assert "csrf_token" in session
    url = f"/queue/tasks/{task_id}/retry"
    assert d.client.post(url).status_code == 400
    assert d.status(task_id) == "dead"
    assert d.client.post(url, data={"csrf_token": token}).status_code == 302
    assert d.status(task_id) == "queued"


# -- the documented example ------------------------------------------------------------


def test_documented_example(sqlite_uri: str, tmp_path: Path) -> None:
    path = ROOT / "docs" / "examples" / "dashboard_app.py"
    spec = importlib.util.spec_from_file_location("dashboard_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.create_app({"SQLALCHEMY_DATABASE_URI": sqlite_uri, "TESTING": True})
    with app.app_context():
        module.db.create_all()
        task_id = module.queue.perform("reports.build", {"year": 2026})
    client = app.test_client()
    response = client.get("/admin/queue/")
    assert response.status_code == 302
    assert response.location == "/login?next=/admin/queue/"
    with client.session_transaction() as session:
        session["user"] = "bob"
        session["role"] = "staff"
    assert client.get("/admin/queue/").status_code == 403
    with client.session_transaction() as session:
        session["role"] = "admin"
    page = client.get(f"/admin/queue/tasks/{task_id}")
    assert page.status_code == 200
    assert "&#34;year&#34;: 2026" in page.text
    with app.app_context():
        module.db.engine.dispose()

    # Mounted by hand instead.
    other = module.create_app(
        {"SQLALCHEMY_DATABASE_URI": sqlite_uri, "PLAINQUEUE_DASHBOARD": False}
    )
    module.mount_elsewhere(other)
    client = other.test_client()
    assert client.get("/admin/queue/").status_code == 404
    assert client.get("/ops/queue/").status_code == 302
    with client.session_transaction() as session:
        session["user"] = "ann"
        session["role"] = "admin"
    assert "reports.build" in client.get("/ops/queue/").text
    with other.app_context():
        module.db.engine.dispose()


def test_config_auth_wins_over_the_decorator(make_dash: MakeDash) -> None:
    d = make_dash(allow=True, PLAINQUEUE_DASHBOARD_AUTH=lambda: False)
    assert d.client.get("/queue/").status_code == 403


def test_example_app_mounts_it_behind_a_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    import example_app
    from example_app.extensions import db

    app = example_app.create_app(
        {"TESTING": True}, instance_path=str(tmp_path / "instance")
    )
    client = app.test_client()
    try:
        response = client.get("/queue/tasks?state=dead")
        assert response.status_code == 302
        assert response.location == "/login?next=/queue/tasks"
        assert "Queue dashboard" in client.get("/").text
        wrong = client.post("/login", data={"password": "nope"})
        assert "Wrong password." in wrong.text
        assert client.get("/queue/").status_code == 302
        # Only local paths are followed after logging in.
        evil = client.post("/login?next=//evil.example/", data={"password": "admin"})
        assert evil.location == "/queue/"
        response = client.post("/login?next=/queue/tasks", data={"password": "admin"})
        assert response.location == "/queue/tasks"
        assert client.get("/queue/").status_code == 200
        client.post("/logout")
        assert client.get("/queue/").status_code == 302
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
