"""docs/coming-from.rst: flask-plainqueue's side of each comparison
(docs/examples/coming_from.py) does what the page says: the task runs when
enqueued, retries three times ten seconds apart, the periodic task runs at
03:00, and the page's test example passes."""

from __future__ import annotations

import datetime
import importlib
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import current_app

ROOT = Path(__file__).parent.parent.parent
EXAMPLES = ROOT / "docs" / "examples"
PAGE = ROOT / "docs" / "coming-from.rst"
UTC = datetime.timezone.utc


@pytest.fixture
def example(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[types.ModuleType]:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    module = importlib.import_module("coming_from")
    for stand_in in (module.outbox, module.report_answers, module.cleanups):
        stand_in.clear()
    app = module.create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'c.db'}"}
    )
    with app.app_context():
        yield module
        module.db.session.remove()
        module.db.engine.dispose()


def test_enqueued_task_runs(example: types.ModuleType) -> None:
    example.sign_up("ann@example.com")
    assert example.outbox == []
    assert example.queue.drain() == 1
    assert example.outbox == ["ann@example.com"]


def test_retries_three_times_ten_seconds_apart(example: types.ModuleType) -> None:
    db, queue = example.db, example.queue
    example.report_answers[:] = ["down"] * 10
    task_id = int(example.fetch_report.perform({"report_id": 7}))
    for failed_nr in range(1, 5):
        before = datetime.datetime.now(UTC)
        assert queue.drain() == 1
        task = db.session.get(queue.Task, task_id)
        assert task is not None
        db.session.refresh(task)
        assert task.failed_nr == failed_nr
        if failed_nr <= 3:  # retried 10 s later, so not due yet
            assert task.status == "queued"
            wait = task.run_at - before
            assert (
                datetime.timedelta(seconds=9) < wait <= datetime.timedelta(seconds=11)
            )
            task.run_at = before  # due again
            db.session.commit()
    assert task.status == "dead"  # four runs: the first and three retries
    assert len(example.report_answers) == 6


def test_other_exceptions_are_not_retried(example: types.ModuleType) -> None:
    example.report_answers[:] = ["bad"]
    task_id = int(example.fetch_report.perform({"report_id": 7}))
    assert example.queue.drain() == 1
    task = example.db.session.get(example.queue.Task, task_id)
    assert task is not None
    assert (task.failed_nr, task.status) == (1, "dead")
    assert task.failed_error is not None
    assert "ValueError: no report 7" in task.failed_error


def test_periodic_task_runs_at_three(example: types.ModuleType) -> None:
    queue = example.queue
    worker = queue.worker(current_app._get_current_object())  # type: ignore[attr-defined]
    try:
        worker.scheduler.tick(datetime.datetime(2026, 3, 1, 2, 59, tzinfo=UTC))
        assert queue.count() == 0  # a new schedule waits for its first tick
        at_three = datetime.datetime(2026, 3, 1, 3, 0, 1, tzinfo=UTC)
        worker.scheduler.tick(at_three)
        (row,) = example.db.session.scalars(sa.select(queue.Task)).all()
        assert row.name == "nightly_cleanup"
        assert worker.run_once(at_three) == 1
        assert example.cleanups == ["done"]
    finally:
        worker.close()
        queue.forget_worker(worker)


def test_the_page_test_example_passes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
        + [str(EXAMPLES / "test_coming_from.py")],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_every_snippet_of_ours_comes_from_the_examples() -> None:
    text = PAGE.read_text()
    ours = re.findall(
        r"^\.\. literalinclude:: (\S+)\n\s+:caption: flask-plainqueue", text, re.M
    )
    assert {Path(p).name for p in ours} == {"coming_from.py", "test_coming_from.py"}
    # Every section shows our side.
    sections = re.split(r"^-{3,}$", text, flags=re.M)[1:]
    assert len(sections) >= 6
    for section in sections:
        assert ":caption: flask-plainqueue" in section, section[:80]
