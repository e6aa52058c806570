"""Kept results as ``flask queue show``/``list`` and the dashboard show them,
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import create_test_app
from conftest import Env

from flask_plainqueue import current_task


@pytest.fixture
def kept(database_uri: str, tmp_path: Path) -> Iterator[tuple[Env, int, int]]:
    """A succeeded task kept with its result and progress, and a waiting one."""
    app, db, queue = create_test_app(
        database_uri,
        tmp_path,
        PLAINQUEUE_KEEP_SUCCEEDED=3600,
        PLAINQUEUE_DASHBOARD=True,
        PLAINQUEUE_DASHBOARD_AUTH=lambda: True,
    )

    @queue.task(name="r.render")
    def render(data: t.Any) -> dict[str, str]:
        current_task.report_progress({"done": 3, "total": 3})
        return {"url": "/reports/<b>x</b>"}

    with app.app_context():
        db.drop_all()
        db.create_all()
        done = queue.perform(render, {"month": "2026-11"})
        queue.drain()
        waiting = queue.perform(render, {"month": "2026-12"}, delay=3600)
        try:
            yield Env(app, db, queue), done, waiting
        finally:
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


def test_cli_show_and_list_succeeded(kept: tuple[Env, int, int]) -> None:
    env, done, waiting = kept
    runner = env.app.test_cli_runner()
    result = runner.invoke(args=["queue", "show", str(done)])
    assert result.exit_code == 0, result.output
    assert re.search(r"^state\s+succeeded$", result.output, re.M)
    assert re.search(
        r"^finished\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", result.output, re.M
    )
    assert 'progress:\n{\n  "done": 3,\n  "total": 3\n}' in result.output
    assert 'result:\n{\n  "url": "/reports/<b>x</b>"\n}' in result.output
    shown = json.loads(
        runner.invoke(args=["queue", "show", str(done), "--json"]).output
    )
    assert shown["state"] == "succeeded"
    assert shown["result"] == {"url": "/reports/<b>x</b>"}
    assert shown["progress"] == {"done": 3, "total": 3}
    assert shown["finished"] is not None
    result = runner.invoke(args=["queue", "show", str(waiting)])
    assert "result:" not in result.output and "progress:" not in result.output
    assert re.search(r"^finished\s+-$", result.output, re.M)

    result = runner.invoke(args=["queue", "list", "--state", "succeeded", "--json"])
    assert result.exit_code == 0, result.output
    assert [row["id"] for row in json.loads(result.output)] == [done]
    result = runner.invoke(args=["queue", "list", "--state", "succeeded"])
    assert re.search(rf"^{done}\s+r\.render\s+succeeded\s", result.output, re.M)
    status = json.loads(runner.invoke(args=["queue", "status", "--json"]).output)
    assert status["total"]["succeeded"] == 1
    # Deleting by state, as for dead tasks.
    result = runner.invoke(args=["queue", "delete", "--state", "succeeded", "--yes"])
    assert result.exit_code == 0, result.output
    assert env.queue.get(done) is None and env.queue.get(waiting) is not None


def test_dashboard_lists_and_shows_succeeded(kept: tuple[Env, int, int]) -> None:
    env, done, waiting = kept
    client = env.app.test_client()
    overview = client.get("/queue/")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", overview.text))
    assert "0 running 1 succeeded 0 dead" in text
    page = client.get("/queue/tasks?state=succeeded")
    assert page.status_code == 200
    assert re.findall(r'<td><a href="/queue/tasks/(\d+)">', page.text) == [str(done)]
    detail = client.get(f"/queue/tasks/{done}")
    assert detail.status_code == 200
    assert 'id="pq-result"' in detail.text and 'id="pq-progress"' in detail.text
    # Escaped like the data.
    assert "&lt;b&gt;x&lt;/b&gt;" in detail.text and "<b>x</b>" not in detail.text
    assert "Kept until" in detail.text and "Finished" in detail.text
    # A succeeded task is not retried; it may be deleted.
    assert 'id="pq-retry"' not in detail.text and 'id="pq-delete"' in detail.text
