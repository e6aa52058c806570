"""The dashboard's operations side through Flask's test client, on both
databases: the Workers page, why on the task page, and the Pause and Resume
buttons with their markers. In a real browser: ``tests/processes/test_browser.py``
(``test_workers_page_pause_resume_and_why``)."""

from __future__ import annotations

import datetime
import html
import re
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import create_test_app
from flask import Flask
from flask.testing import FlaskClient
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue
from flask_plainqueue.claims import ClaimRequest
from flask_plainqueue.roster import Roster
from flask_plainqueue.roster import WorkerRow


class Dash(t.NamedTuple):
    app: Flask
    db: SQLAlchemy
    queue: PlainQueue
    client: FlaskClient

    def page(self, path: str) -> str:
        response = self.client.get(path)
        assert response.status_code == 200, response.text
        return html.unescape(response.text)

    def token(self) -> str:
        page = self.client.get("/queue/workers").text
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert match, page
        return match.group(1)

    def post(self, action: str, **form: str) -> t.Any:
        form.setdefault("csrf_token", self.token())
        return self.client.post(f"/queue/{action}", data=form)


@pytest.fixture
def dash(database_uri: str, tmp_path: Path) -> Iterator[Dash]:
    app, db, queue = create_test_app(
        database_uri, tmp_path / "instance", PLAINQUEUE_DASHBOARD=True
    )
    queue.dashboard_auth(lambda: True)

    @queue.task(name="d.ok")
    def ok(data: t.Any) -> None:
        pass

    @queue.task(name="d.mail", queue="mail")
    def mail(data: t.Any) -> None:
        pass

    @queue.task(name="d.fail", max_retries=0)
    def fail(data: t.Any) -> None:
        raise ValueError("it broke")

    @queue.periodic(name="d.hourly", every=datetime.timedelta(hours=1))
    def hourly() -> None:
        pass

    with app.app_context():
        db.drop_all()
        db.create_all()
        yield Dash(app, db, queue, app.test_client())
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def _register(
    dash: Dash, worker_id: str, *, heartbeat_age: float = 0.0, **kw: t.Any
) -> None:
    """Register a worker row as a worker does, last heard of
    ``heartbeat_age`` seconds ago."""
    store = dash.queue.store()
    beat = store.clock() - datetime.timedelta(seconds=heartbeat_age)
    values: dict[str, t.Any] = {
        "id": worker_id,
        "host": "jobs-1",
        "pid": 4242,
        "kind": "process",
        "queues": None,
        "tasks": ("d.ok", "d.mail", "d.fail"),
        "concurrency": 3,
        "version": "0.1.0",
        "state": "running",
        "started": beat,
        "heartbeat": beat,
        **kw,
    }
    Roster(store).register(WorkerRow(**values))


def _claim_as(dash: Dash, owner: str, name: str) -> list[int]:
    store = dash.queue.store()
    now = store.clock()
    claimed = store.claim(
        ClaimRequest(
            owner=owner,
            names=[name],
            batch_sizes={name: 10},
            now=now,
            until=now + datetime.timedelta(seconds=600),
        )
    )
    return [c.id for c in claimed]


def _row(page: str, cell: str) -> str:
    """The table row (``<tr>...</tr>``) holding ``cell``."""
    for row in re.findall(r"<tr>.*?</tr>", page, re.S):
        if cell in row:
            return t.cast(str, row)
    raise AssertionError(f"no row with {cell!r}")


def test_workers_page_lists_each_worker_and_what_it_runs(dash: Dash) -> None:
    assert "No workers registered" in dash.page("/queue/workers")
    assert 'href="/queue/workers" id="pq-nav-workers"' in dash.page("/queue/")

    _register(dash, "jobs-1:4242:aa", queues=("mail", "default"))
    _register(
        dash, "web-1:7:bb", kind="embedded", host="web-1", pid=7, state="stopping"
    )
    _register(dash, "old-1:9:cc", host="old-1", pid=9, heartbeat_age=3600)
    first, second = (dash.queue.perform("d.ok", n) for n in (1, 2))
    assert _claim_as(dash, "jobs-1:4242:aa", "d.ok") == [first, second]

    page = dash.page("/queue/workers")
    running = _row(page, "jobs-1:4242:aa")
    assert 'pq-worker-running">running<' in running
    for text in ("process", "jobs-1 / 4242", "<code>mail</code>, <code>default</code>"):
        assert text in running
    assert ">3<" in running and ">0.1.0<" in running
    assert re.search(r">\d+s ago<", running), running
    assert f'<a href="/queue/tasks/{first}">{first}</a>' in running
    assert f'<a href="/queue/tasks/{second}">{second}</a>' in running

    stopping = _row(page, "web-1:7:bb")
    assert 'pq-worker-stopping">stopping<' in stopping
    assert "embedded" in stopping and ">all<" in stopping and ">idle<" in stopping
    lost = _row(page, "old-1:9:cc")
    assert 'pq-worker-lost">lost<' in lost and ">1h ago<" in lost
    assert [w.state for w in dash.queue.workers()] == ["lost", "running", "stopping"]


def test_task_page_says_why(dash: Dash) -> None:
    waiting = dash.queue.perform("d.ok", 1)
    page = dash.page(f"/queue/tasks/{waiting}")
    reason = dash.queue.why(waiting)
    assert reason.code == "no-worker"
    assert (
        f'<code class="pq-reason" id="pq-why-code">no-worker</code> {reason.message}'
        in page
    )
    _register(dash, "jobs-1:4242:aa")
    assert ">pending</code> It is due and first in line" in dash.page(
        f"/queue/tasks/{waiting}"
    )
    dead = dash.queue.perform("d.fail", 1)
    dash.queue.drain()
    assert ">dead</code> It failed 1 time(s)" in dash.page(f"/queue/tasks/{dead}")
    later = dash.queue.perform("d.ok", 2, delay=600)
    assert ">scheduled</code> It is due at" in dash.page(f"/queue/tasks/{later}")


def test_pause_and_resume_a_task_name_from_the_overview(dash: Dash) -> None:
    task_id = dash.queue.perform("d.ok", 1)
    dash.queue.perform("d.mail", 1)
    page = dash.page("/queue/")
    row = _row(page, 'href="/queue/tasks?name=d.ok"')
    assert 'action="/queue/pause"' in row and "paused</span>" not in row
    assert 'name="back" value="/queue/"' in row
    assert "nothing" in re.search(r'id="pq-paused">(.*?)</dd>', page, re.S)[1]  # type: ignore[index]

    response = dash.post("pause", kind="task", name="d.ok", back="/queue/")
    assert response.status_code == 302 and response.location == "/queue/"
    assert dash.queue.paused().tasks == {"d.ok"}
    page = dash.page("/queue/")
    assert "Task 'd.ok' is paused: workers stop claiming its tasks" in page
    row = _row(page, 'href="/queue/tasks?name=d.ok"')
    assert 'action="/queue/resume"' in row and "paused</span>" in row
    other = _row(page, 'href="/queue/tasks?name=d.mail"')
    assert 'action="/queue/pause"' in other and "paused</span>" not in other
    assert "task <code>d.ok</code>" in page

    # The task's list row and page show it paused, and why.
    listed = _row(dash.page("/queue/tasks?name=d.ok"), f">{task_id}</a>")
    assert "paused</span>" in listed
    detail = dash.page(f"/queue/tasks/{task_id}")
    assert ">task-paused</code> Task 'd.ok' is paused" in detail
    assert 'id="pq-resume-why"' in detail

    again = dash.post("pause", kind="task", name="d.ok")
    assert again.status_code == 302
    assert "Task 'd.ok' was already paused." in dash.page("/queue/")

    response = dash.post(
        "resume", kind="task", name="d.ok", back=f"/queue/tasks/{task_id}"
    )
    assert response.location == f"/queue/tasks/{task_id}"
    assert dash.queue.paused().tasks == frozenset()
    detail = dash.page(f"/queue/tasks/{task_id}")
    assert "Task 'd.ok' is resumed." in detail
    assert "paused</span>" not in detail and "pq-resume-why" not in detail
    dash.post("resume", kind="task", name="d.ok")
    assert "Task 'd.ok' was not paused." in dash.page("/queue/")


def test_pause_and_resume_a_queue(dash: Dash) -> None:
    task_id = dash.queue.perform("d.mail", 1)
    dash.queue.perform("d.ok", 1)
    row = _row(dash.page("/queue/"), "<code>mail</code>")
    assert ">1<" in row and 'action="/queue/pause"' in row

    dash.post("pause", kind="queue", name="mail")
    assert dash.queue.paused().queues == {"mail"}
    page = dash.page("/queue/")
    assert "Queue 'mail' is paused" in page
    assert "paused</span>" in _row(page, "<code>mail</code>")
    assert "paused</span>" not in _row(page, "<code>default</code>")
    assert "paused</span>" in _row(dash.page("/queue/tasks"), f">{task_id}</a>")
    assert ">queue-paused</code>" in dash.page(f"/queue/tasks/{task_id}")
    assert dash.queue.drain() == 1  # d.ok only

    # The Workers page lists what is paused, with Resume buttons; its form
    # pauses a name that has no tasks stored.
    workers = dash.page("/queue/workers")
    assert 'action="/queue/resume"' in _row(workers, "<code>mail</code>")
    dash.post("pause", kind="task", name="d.nothing.yet", back="/queue/workers")
    workers = dash.page("/queue/workers")
    assert 'action="/queue/resume"' in _row(workers, ">d.nothing.yet</a>")
    assert dash.queue.paused().tasks == {"d.nothing.yet"}

    dash.post("resume", kind="queue", name="mail")
    assert dash.queue.paused().queues == frozenset()
    assert dash.queue.drain() == 1


def test_periodic_page_marks_and_pauses_periodic_tasks(dash: Dash) -> None:
    row = _row(dash.page("/queue/periodic"), ">d.hourly</a>")
    assert "paused</span>" not in row and 'action="/queue/pause"' in row
    assert 'value="/queue/periodic"' in row
    response = dash.post("pause", kind="task", name="d.hourly", back="/queue/periodic")
    assert response.location == "/queue/periodic"
    row = _row(dash.page("/queue/periodic"), ">d.hourly</a>")
    assert "paused</span>" in row and 'action="/queue/resume"' in row
    dash.queue.resume(task="d.hourly")
    dash.queue.pause(queue="default")
    row = _row(dash.page("/queue/periodic"), ">d.hourly</a>")
    assert 'title="its queue is paused">paused</span>' in row
    assert 'action="/queue/pause"' in row  # the name itself is not paused


def test_pause_forms_are_checked(dash: Dash) -> None:
    # No CSRF token: refused, nothing paused.
    refused = dash.client.post("/queue/pause", data={"kind": "task", "name": "d.ok"})
    assert refused.status_code == 400
    assert not dash.queue.paused()
    # A GET never pauses.
    assert dash.client.get("/queue/pause").status_code == 405

    bad = dash.post("pause", kind="worker", name="d.ok")
    assert bad.status_code == 400
    assert "kind must be &#39;queue&#39; or &#39;task&#39;" in bad.text
    assert not dash.queue.paused()

    empty = dash.post("pause", kind="queue", name="  ")
    assert empty.status_code == 302
    assert "queue" in dash.page("/queue/").split('class="pq-flash pq-flash-error"')[1]
    assert not dash.queue.paused()

    # The form sends the browser back only to a page of the dashboard.
    for back in (
        "https://evil.example/queue/",
        "//evil.example/queue/",
        "/queue//evil.example",
        "/queue/\\evil.example",
        "/elsewhere",
        "",
    ):
        response = dash.post("resume", kind="task", name="d.ok", back=back)
        assert response.location == "/queue/", back
    kept = dash.post("resume", kind="task", name="d.ok", back="/queue/tasks?state=dead")
    assert kept.location == "/queue/tasks?state=dead"


def test_without_the_workers_and_pauses_tables_the_pages_still_work(
    dash: Dash,
) -> None:
    """An app upgraded without its migration: every page answers, and says
    what is missing where it needs those tables."""
    task_id = dash.queue.perform("d.ok", 1)
    store = dash.queue.store()
    store.tables.workers.drop(store.engine)
    store.tables.pauses.drop(store.engine)

    assert "d.ok" in dash.page("/queue/")
    assert ">d.hourly</a>" in dash.page("/queue/periodic")
    detail = dash.page(f"/queue/tasks/{task_id}")
    assert "Why: unknown." in detail
    assert "The workers and pauses tables do not exist yet" in detail
    workers = dash.page("/queue/workers")
    assert 'id="pq-missing">The workers and pauses tables do not exist' in workers
    assert "No workers registered" not in workers

    response = dash.post("pause", kind="task", name="d.ok")
    assert response.status_code == 302
    flashed = dash.page("/queue/").split('class="pq-flash pq-flash-error"')[1]
    assert "The workers and pauses tables do not exist yet" in flashed


def test_pause_forms_come_back_under_a_script_root(dash: Dash) -> None:
    """Behind a proxy that mounts the app under a prefix (``SCRIPT_NAME``), the
    form comes back to the page it was on, prefix included."""
    base = "http://localhost/app/"
    page = dash.client.get("/queue/periodic", base_url=base).text
    assert 'name="back" value="/app/queue/periodic"' in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    response = dash.client.post(
        "/queue/pause",
        data={
            "csrf_token": token[1],
            "kind": "task",
            "name": "d.hourly",
            "back": "/app/queue/periodic",
        },
        base_url=base,
    )
    assert response.location == "/app/queue/periodic"
    assert dash.queue.paused().tasks == {"d.hourly"}
