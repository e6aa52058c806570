"""docs/examples/task_app: Flask's "Background Tasks with Celery" example
ported (docs/results.rst, "Flask's Celery example, ported"): its three forms
start tasks, and the page follows them with ``queue.stream``."""

from __future__ import annotations

import importlib
import json
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

ROOT = Path(__file__).parent.parent.parent
EXAMPLES = ROOT / "docs" / "examples"

if t.TYPE_CHECKING:
    from types import ModuleType


@pytest.fixture
def task_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, Flask]]:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    # The example reads FLASK_* settings from the environment, as Flask's does.
    monkeypatch.setenv(
        "FLASK_SQLALCHEMY_DATABASE_URI", f"sqlite:///{tmp_path / 'task_app.db'}"
    )
    monkeypatch.setenv("FLASK_TESTING", "true")
    package = importlib.import_module("task_app")
    tasks = importlib.import_module("task_app.tasks")
    monkeypatch.setattr(tasks.time, "sleep", lambda seconds: None)
    app = package.create_app()
    yield package, app
    with app.app_context():
        package.db.session.remove()
        package.db.drop_all()
        package.db.engine.dispose()


def _events(app: Flask, task_id: int) -> list[tuple[str, t.Any]]:
    body = app.test_client().get(f"/tasks/{task_id}/events").get_data(as_text=True)
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_the_forms_start_tasks_whose_results_stream(
    task_app: tuple[ModuleType, Flask],
) -> None:
    package, app = task_app
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    assert 'new EventSource(`/tasks/${data["result_id"]}/events`)' in page

    added = client.post("/tasks/add", data={"a": 4, "b": 2}).get_json()["result_id"]
    blocked = client.post("/tasks/block").get_json()["result_id"]
    counted = client.post("/tasks/process", data={"total": 3}).get_json()["result_id"]
    with app.app_context():
        assert package.queue.drain("task_app.add") == 1
        assert package.queue.drain("task_app.process") == 1
        info = package.queue.get(blocked)
        assert info is not None and info.state.value == "pending"
    assert _events(app, added) == [("done", {"state": "succeeded", "result": 6})]
    assert _events(app, counted) == [
        ("progress", {"current": 3, "total": 3}),
        ("done", {"state": "succeeded", "result": {"current": 3, "total": 3}}),
    ]
