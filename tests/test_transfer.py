"""``flask queue export`` / ``flask queue import``: moving stored tasks from one
database to another (SQLite to PostgreSQL, and back)."""

from __future__ import annotations

import datetime
import json
import subprocess
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from helpers import APPS
from helpers import child_env
from helpers import flask_args

UTC = datetime.timezone.utc
SOON = datetime.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


class Side(t.NamedTuple):
    app: t.Any
    db: t.Any
    queue: t.Any
    task: t.Any


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
        failed = int(q.perform(task, {"failed": True}))
        dead = int(q.perform(task, {"dead": True}))
        running = int(q.perform(task, {"running": True}))
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
        {**row, "data": json.loads(row["data"]) if row["data"] is not None else None}
        for row in rows
    ]


def _invoke(side: Side, *args: str) -> t.Any:
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
    assert message in result.output
    assert "nothing was imported" in result.output
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


@pytest.mark.postgresql
def test_sqlite_to_postgresql_with_the_flask_command(
    tmp_path: Path, postgresql_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The docs' migration, as a user runs it: ``flask queue export >
    tasks.jsonl`` on the old app, ``flask queue import tasks.jsonl`` on the new."""
    monkeypatch.syspath_prepend(str(APPS))
    import pgapp

    sqlite_uri = f"sqlite:///{tmp_path / 'old.db'}"
    for uri in (sqlite_uri, postgresql_uri):
        monkeypatch.setenv("PGAPP_DATABASE_URI", uri)
        app = pgapp.create_app()
        with app.app_context():
            pgapp.db.create_all()
            if uri == sqlite_uri:
                pgapp.queue.perform_many(
                    pgapp.record, [{"key": f"k{i}"} for i in range(50)]
                )
            pgapp.db.session.remove()
            pgapp.db.engine.dispose()
    path = tmp_path / "tasks.jsonl"
    with path.open("wb") as out:
        subprocess.run(
            flask_args("pgapp:create_app", "queue", "export"),
            env=child_env(PGAPP_DATABASE_URI=sqlite_uri),
            stdout=out,
            check=True,
            timeout=120,
        )
    done = subprocess.run(
        flask_args("pgapp:create_app", "queue", "import", str(path)),
        env=child_env(PGAPP_DATABASE_URI=postgresql_uri),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "Imported 50 tasks." in done.stdout
    subprocess.run(
        flask_args("pgapp:create_app", "queue", "work", "--burst"),
        env=child_env(PGAPP_DATABASE_URI=postgresql_uri),
        check=True,
        timeout=300,
    )
    engine = sa.create_engine(postgresql_uri, poolclass=sa.NullPool)
    with engine.connect() as conn:
        keys = conn.execute(sa.text("SELECT key FROM pg_runs WHERE runs = 1")).scalars()
        assert sorted(keys) == sorted(f"k{i}" for i in range(50))
        assert (
            conn.execute(sa.text("SELECT count(*) FROM plainqueue_tasks")).scalar() == 0
        )
    engine.dispose()
