"""``flask queue export`` / ``flask queue import`` (and ``queue.export_tasks`` /
``queue.import_tasks`` under them): moving stored tasks from one database to
another (a SQLite file to PostgreSQL or to another SQLite file). The same in
real ``flask`` processes is in ``tests/processes/test_cli_smoke.py``."""

from __future__ import annotations

import datetime
import io
import json
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result
from conftest import create_test_app
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue
from flask_plainqueue import TaskDefinition
from flask_plainqueue import TaskState
from flask_plainqueue import TransferError
from flask_plainqueue.clock import as_utc

UTC = datetime.timezone.utc
SOON = datetime.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


class Side(t.NamedTuple):
    app: Flask
    db: SQLAlchemy
    queue: PlainQueue
    task: TaskDefinition[[t.Any], None]


def _side(uri: str, path: Path) -> Side:
    app, db, queue = create_test_app(uri, path)

    @queue.task(name="mail", queue="emails", priority=3)
    def mail(data: t.Any) -> None: ...

    with app.app_context():
        db.create_all()
    return Side(app, db, queue, mail)


def _close(side: Side) -> None:
    with side.app.app_context():
        side.db.session.remove()
        side.db.engine.dispose()


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Side]:
    # Not ``sqlite_uri``: that is the file ``database_uri`` gives the target.
    side = _side(f"sqlite:///{tmp_path / 'source.db'}", tmp_path / "source")
    yield side
    _close(side)


@pytest.fixture
def target(database_uri: str, tmp_path: Path) -> Iterator[Side]:
    side = _side(database_uri, tmp_path / "target")
    yield side
    _close(side)


def _fill(side: Side) -> None:
    """One task in each state the export must carry over."""
    q, task = side.queue, side.task
    with side.app.app_context():
        q.perform(task, {"to": "a@example.com", "n": [1, 2.5, None, True]})
        q.perform(task, "é ✓ \\u0000 text", run_at=SOON)
        q.perform(task, None, unique_key="once", priority=9)
        failed = q.perform(task, {"failed": True})
        dead = q.perform(task, {"dead": True})
        running = q.perform(task, {"running": True})
        table = q.Task.__table__
        with side.db.engine.begin() as conn:
            conn.execute(
                table.update()
                .where(table.c.id == failed)
                .values(
                    failed_nr=1,
                    attempts=1,
                    failed_last=SOON,
                    failed_error="ValueError: nope\nTraceback...",
                    run_at=SOON,
                )
            )
            conn.execute(
                table.update()
                .where(table.c.id == dead)
                .values(status="dead", failed_nr=6, attempts=6, failed_error="boom")
            )
            conn.execute(
                table.update()
                .where(table.c.id == running)
                .values(lease_owner="somewhere:1:x", attempts=1, run_at=SOON)
            )


def _rows(side: Side) -> list[dict[str, t.Any]]:
    with side.app.app_context():
        table = side.queue.Task.__table__
        with side.db.engine.connect() as conn:
            rows = conn.execute(sa.select(table).order_by(table.c.id)).mappings().all()
    return [
        {
            **row,
            "data": json.loads(row["data"]) if row["data"] is not None else None,
            # SQLite keeps no offset: what it returns is UTC, made aware here.
            **{
                key: None if row[key] is None else as_utc(row[key])
                for key in ("created", "run_at", "failed_last")
            },
        }
        for row in rows
    ]


def _invoke(side: Side, *args: str) -> Result:
    with side.app.app_context():
        return side.app.test_cli_runner().invoke(args=["queue", *args])


def test_export_then_import_carries_every_waiting_task(
    source: Side, target: Side, tmp_path: Path
) -> None:
    _fill(source)
    path = tmp_path / "tasks.jsonl"
    before = datetime.datetime.now(UTC)
    result = _invoke(source, "export", str(path))
    assert result.exit_code == 0, result.output
    assert "Exported 5 tasks (0 dead)" in result.stderr
    assert "1 task(s) were held by a running worker" in result.stderr
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5
    assert all(json.loads(line)["name"] == "mail" for line in lines)

    result = _invoke(target, "import", str(path))
    assert result.exit_code == 0, result.output
    assert "Imported 5 tasks." in result.output

    old = [r for r in _rows(source) if r["status"] == "queued"]
    new = _rows(target)
    assert len(new) == len(old) == 5
    for a, b in zip(old, new, strict=True):
        for key in ("name", "queue", "priority", "data", "created", "status"):
            assert a[key] == b[key], key
        for key in ("attempts", "failed_nr", "failed_last", "failed_error"):
            assert a[key] == b[key], key
        assert a["unique_key"] == b["unique_key"]
        assert b["lease_owner"] is None
        if a["lease_owner"] is None:
            assert a["run_at"] == b["run_at"]
        else:
            # A task a worker held is due at once in its new home.
            assert before <= b["run_at"] <= datetime.datetime.now(UTC)
    assert {r["data"] == "é ✓ \\u0000 text" for r in new} == {True, False}

    # The unique task is still unique: importing again skips it.
    result = _invoke(target, "import", str(path))
    assert result.exit_code == 0, result.output
    assert "Imported 4 tasks; skipped 1 whose unique_key" in result.output
    # And the imported tasks run.
    with target.app.app_context():
        assert target.queue.drain() == 5


def test_include_dead(source: Side, tmp_path: Path) -> None:
    _fill(source)
    path = tmp_path / "all.jsonl"
    result = _invoke(source, "export", "--include-dead", str(path))
    assert result.exit_code == 0, result.output
    assert "Exported 6 tasks (1 dead)" in result.stderr
    dead = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["failed_error"] for x in dead if x["status"] == "dead"] == ["boom"]


def test_export_to_standard_output(source: Side) -> None:
    _fill(source)
    result = _invoke(source, "export")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 5
    assert "to standard output" in result.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "Line 2 is not a task"),
        ('{"data": 1, "created": "2030-01-01T00:00:00+00:00"}', "missing field 'name'"),
        (
            '{"name": "mail", "data": 1, "created": "2030-01-01T00:00:00"}',
            "no timezone",
        ),
        (
            '{"name": "mail", "data": 1, "created": "2030-01-01T00:00:00+00:00",'
            ' "status": "running"}',
            "status must be",
        ),
        ("[1, 2]", "expected a JSON object"),
        # The checks perform() makes, made on import too.
        ('{"name": "", "data": 1, "created": "2030-01-01T00:00:00Z"}', "non-empty"),
        (
            '{"name": "mail", "data": {"k": "\\ud800"},'
            ' "created": "2030-01-01T00:00:00Z"}',
            "its data cannot be stored",
        ),
        (
            '{"name": "mail", "data": 1, "created": "2030-01-01T00:00:00Z",'
            ' "priority": 2147483648}',
            "priority must be a whole number from",
        ),
        (
            '{"name": "mail", "data": 1, "created": "0001-01-01T00:00:00+00:00"}',
            "between the years 1 and 9998",
        ),
        (
            '{"name": "mail", "data_text": 5, "created": "2030-01-01T00:00:00Z"}',
            "data_text must be a string",
        ),
        (
            '{"name": "mail", "data": 1, "created": "2030-01-01T00:00:00Z",'
            ' "unique_key": ""}',
            "unique_key must be a non-empty string",
        ),
    ],
)
def test_a_bad_line_imports_nothing(
    target: Side, tmp_path: Path, line: str, message: str
) -> None:
    good = '{"name": "mail", "data": 1, "created": "2030-01-01T00:00:00+00:00"}'
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n{line}\n{good}\n")
    result = _invoke(target, "import", str(path))
    assert result.exit_code == 1
    assert "Error: Line 2 is not a task exported by" in result.stderr
    assert message in result.stderr
    assert "nothing was imported" in result.stderr
    assert "Traceback" not in result.output
    assert _rows(target) == []
    with target.app.app_context(), pytest.raises(TransferError, match=message):
        target.queue.import_tasks([good, line])
    assert _rows(target) == []


def test_a_file_that_is_not_utf8_imports_nothing(target: Side, tmp_path: Path) -> None:
    good = b'{"name": "mail", "data": 1, "created": "2030-01-01T00:00:00+00:00"}'
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(good + b"\n" + '{"name": "café"}'.encode("latin-1") + b"\n")
    result = _invoke(target, "import", str(path))
    assert result.exit_code == 1
    assert "is not valid UTF-8" in result.stderr
    assert "Nothing was imported." in result.stderr
    assert _rows(target) == []


def test_unknown_task_names_are_imported_with_a_warning(
    target: Side, tmp_path: Path
) -> None:
    path = tmp_path / "other.jsonl"
    path.write_text(
        '{"name": "from.elsewhere", "data": [1], "created": "2030-01-01T00:00:00Z"}\n'
    )
    result = _invoke(target, "import", str(path))
    assert result.exit_code == 0, result.output
    assert "no task definition named 'from.elsewhere'" in result.stderr
    assert [r["name"] for r in _rows(target)] == ["from.elsewhere"]


def test_export_and_import_through_the_queue(source: Side, target: Side) -> None:
    """``queue.export_tasks`` and ``queue.import_tasks``, the API the commands
    call, report what they did."""
    _fill(source)
    out = io.StringIO()
    with source.app.app_context():
        exported = source.queue.export_tasks(out, include_dead=True)
    assert (exported.count, exported.dead, exported.running) == (6, 1, 1)
    assert exported.undecodable == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 6
    extra = '{"name": "from.elsewhere", "data": null, "created": "2030-01-01T00:00Z"}'
    with target.app.app_context():
        imported = target.queue.import_tasks([*lines, extra])
        assert imported.count == 7 and imported.duplicates == 0
        assert imported.unknown_names == {"from.elsewhere"}
        assert target.queue.count(state=TaskState.DEAD) == 1
        assert target.queue.names() == ["from.elsewhere", "mail"]
        again = target.queue.import_tasks(lines)
        assert (again.count, again.duplicates) == (5, 1)
        assert again.unknown_names == set()
        info = target.queue.tasks(name="mail", limit=1)[0]
        assert (info.queue, info.priority) == ("emails", 9)


def test_data_that_is_not_json_is_exported_as_text(
    source: Side, target: Side, tmp_path: Path
) -> None:
    """A hand-written row whose data is not JSON goes over as ``data_text``,
    unchanged."""
    with source.app.app_context():
        task_id = source.queue.perform(source.task, 1)
    table = source.queue.Task.__table__
    with source.app.app_context(), source.db.engine.begin() as conn:
        conn.execute(
            table.update().where(table.c.id == task_id).values(data="{not json")
        )
    path = tmp_path / "text.jsonl"
    result = _invoke(source, "export", str(path))
    assert result.exit_code == 0, result.output
    assert "1 task(s) have data that is not valid JSON" in result.stderr
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["data_text"] == "{not json" and "data" not in record
    result = _invoke(target, "import", str(path))
    assert result.exit_code == 0, result.output
    with target.app.app_context():
        (info,) = target.queue.tasks()
    assert info.data == "{not json"
