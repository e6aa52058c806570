"""The dashboard's security headers on every response (pages, errors, static
files, redirects), its own 400/403/404/405 pages, the Periodic page, the
auto-refresh toggle and the link back to the app, through Flask's test client
on both databases. That browsers refuse to frame it, and the toggle reloading
pages, are shown in ``tests/processes/test_browser.py``."""

from __future__ import annotations

import datetime
import re
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import create_test_app
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_plainqueue import PlainQueue
from flask_plainqueue.dashboard import SECURITY_HEADERS

CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"


class Site(t.NamedTuple):
    app: Flask
    queue: PlainQueue
    client: FlaskClient


@pytest.fixture
def make_site(database_uri: str, tmp_path: Path) -> Iterator[t.Callable[..., Site]]:
    made: list[tuple[Site, t.Any, t.Any]] = []

    def make(*, allow: bool | None = True, **config: t.Any) -> Site:
        config.setdefault("PLAINQUEUE_DASHBOARD", True)
        app, db, queue = create_test_app(
            database_uri, tmp_path / f"instance{len(made)}", **config
        )
        if allow is not None:
            queue.dashboard_auth(lambda: allow)

        @queue.task(name="h.ok")
        def ok(data: t.Any) -> None:
            pass

        @queue.periodic(name="h.every", every=datetime.timedelta(hours=1))
        def hourly() -> None:
            pass

        @queue.periodic(name="h.cron", cron="15 4 * * 1", tz="America/New_York")
        def weekly() -> None:
            pass

        ctx = app.app_context()
        ctx.push()
        db.drop_all()
        db.create_all()
        site = Site(app, queue, app.test_client())
        made.append((site, db, ctx))
        return site

    yield make
    for _, db, ctx in reversed(made):
        db.session.remove()
        db.drop_all()
        db.engine.dispose()
        ctx.pop()


@pytest.fixture
def site(make_site: t.Callable[..., Site]) -> Site:
    return make_site()


def assert_secured(response: TestResponse, what: object) -> None:
    assert response.headers["Content-Security-Policy"] == CSP, what
    assert response.headers["X-Content-Type-Options"] == "nosniff", what
    assert response.headers["Cache-Control"] == "no-store", what
    assert response.headers["Referrer-Policy"] == "same-origin", what
    assert response.headers["X-Frame-Options"] == "DENY", what


def _token(site: Site) -> str:
    page = site.client.get("/queue/tasks")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    if match is None:  # no form on an empty list: take it from a task's page
        task_id = site.queue.perform("h.ok", 0, delay=600)
        page = site.client.get(f"/queue/tasks/{task_id}")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def test_every_response_carries_the_security_headers(site: Site) -> None:
    task_id = site.queue.perform("h.ok", 1, delay=600)
    token = _token(site)
    cases: list[tuple[str, str, dict[str, str] | None, int]] = [
        ("GET", "/queue/", None, 200),
        ("GET", "/queue", None, 200),
        ("GET", "/queue/tasks?state=pending", None, 200),
        ("GET", f"/queue/tasks/{task_id}", None, 200),
        ("GET", "/queue/periodic", None, 200),
        ("GET", "/queue/static/plainqueue/plainqueue.css", None, 200),
        ("GET", "/queue/static/plainqueue/plainqueue.js", None, 200),
        ("GET", "/queue/static/plainqueue/nothing.css", None, 404),
        ("GET", "/queue/tasks/424242", None, 404),
        ("GET", "/queue/no/such/page", None, 404),
        ("GET", "/queue/tasks?state=stuck", None, 400),
        ("GET", f"/queue/tasks/{task_id}/retry", None, 405),
        ("POST", f"/queue/tasks/{task_id}/retry", {"csrf_token": "forged"}, 400),
        ("POST", f"/queue/tasks/{task_id}/retry", {"csrf_token": token}, 302),
    ]
    for method, url, form, status in cases:
        response = site.client.open(url, method=method, data=form)
        try:
            assert response.status_code == status, (method, url, response.text)
            assert_secured(response, (method, url))
        finally:
            response.close()  # a static file's response holds the file open
    assert set(SECURITY_HEADERS) >= {
        "Content-Security-Policy",
        "X-Content-Type-Options",
        "Cache-Control",
        "Referrer-Policy",
    }


def test_refusals_carry_the_headers_too(make_site: t.Callable[..., Site]) -> None:
    for allow, needle in ((None, "@queue.dashboard_auth"), (False, "not allowed")):
        site = make_site(allow=allow)
        for url in ("/queue/", "/queue/periodic", "/queue/nowhere"):
            response = site.client.get(url)
            assert response.status_code == 403, url
            assert needle in response.text
            assert_secured(response, (allow, url))
            # The dashboard's page, without links into it.
            assert "plainqueue.css" in response.text
            assert 'id="pq-nav-periodic"' not in response.text


def test_the_app_outside_the_dashboard_is_left_alone(site: Site) -> None:
    @site.app.get("/hello")
    def hello() -> str:
        return "hi"

    for url in ("/hello", "/nowhere"):
        response = site.client.get(url)
        assert "Content-Security-Policy" not in response.headers, url
        assert "X-Frame-Options" not in response.headers, url


def test_error_pages_are_the_dashboards_own(site: Site) -> None:
    for url, status, title, text in (
        ("/queue/tasks/424242", 404, "Not found", "may have finished"),
        ("/queue/no/such/page", 404, "Not found", "may have finished"),
        ("/queue/tasks?state=stuck", 400, "Bad request", "not understood"),
        ("/queue/tasks/1/delete", 405, "Method not allowed", "does not take"),
    ):
        response = site.client.get(url)
        assert response.status_code == status, url
        assert response.mimetype == "text/html", url
        assert f"<h1>{title} <small>{status}</small></h1>" in response.text, url
        assert text in response.text, url
        assert "plainqueue.css" in response.text and 'id="pq-nav-periodic"' in (
            response.text
        )
    assert site.client.get("/queue/tasks/1/delete").headers["Allow"] == "POST"
    # abort(400, "why") keeps its reason: the CSRF check says what to do.
    refused = site.client.post("/queue/retry-failed", data={"csrf_token": "x"})
    assert refused.status_code == 400 and "CSRF token" in refused.text


def test_periodic_page(site: Site) -> None:
    worker = site.queue.worker(site.app)
    worker.scheduler.tick(site.queue.store().clock())
    page = site.client.get("/queue/periodic")
    assert page.status_code == 200
    assert "<h1>Periodic tasks</h1>" in page.text
    rows = re.findall(r"<tr>\s*<td><a[^>]*>([^<]+)</a></td>(.*?)</tr>", page.text, re.S)
    assert [name for name, _ in rows] == ["h.cron", "h.every"]
    cron, every = (cells for _, cells in rows)
    assert "<code>15 4 * * 1</code>" in cron and "(America/New_York)" in cron
    assert "<code>every 1h</code>" in every
    for info, cells in zip(site.queue.periodic_tasks(), (cron, every), strict=True):
        assert info.last_tick is not None and info.next_tick is not None
        for tick in (info.last_tick, info.next_tick):
            assert tick.strftime("%Y-%m-%d %H:%M:%S UTC") in cells
        assert " ago</td>" in cells and ">in " in cells
    nav = re.search(
        r'<a href="/queue/periodic" id="pq-nav-periodic"([^>]*)>', page.text
    )
    assert nav and 'aria-current="page"' in nav.group(1)


def test_periodic_page_without_periodic_tasks(
    database_uri: str, tmp_path: Path
) -> None:
    app, db, queue = create_test_app(database_uri, tmp_path, PLAINQUEUE_DASHBOARD=True)
    queue.dashboard_auth(lambda: True)
    with app.app_context():
        db.create_all()
        try:
            page = app.test_client().get("/queue/periodic")
            assert "No periodic tasks are registered" in page.text
        finally:
            db.drop_all()
            db.engine.dispose()


def test_auto_refresh_toggle_and_back_link(make_site: t.Callable[..., Site]) -> None:
    site = make_site()
    page = site.client.get("/queue/").text
    # Hidden until the script shows it: without JavaScript it could not work.
    assert re.search(
        r'<label class="pq-refresh" hidden><input type="checkbox"'
        r' id="pq-autorefresh" data-seconds="5">',
        page,
    )
    assert '<a class="pq-back" id="pq-back" href="/">' in page
    elsewhere = make_site(PLAINQUEUE_DASHBOARD_BACK_URL="https://example.com/admin/")
    assert 'href="https://example.com/admin/"' in elsewhere.client.get("/queue/").text
    hidden = make_site(PLAINQUEUE_DASHBOARD_BACK_URL=None)
    assert 'id="pq-back"' not in hidden.client.get("/queue/").text
