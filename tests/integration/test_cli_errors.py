"""Every ``flask queue`` error is one ``Error: ...`` line and exit 1 or 2, never
a traceback (the trust issue, item 11), on SQLite and PostgreSQL; and a row
with a corrupt value is shown with it instead of breaking the listing."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest
from click.testing import Result
from conftest import create_test_app
from conftest import Env


def _invoke(env: Env, *args: str, input: str | bytes | None = None) -> Result:
    runner = env.app.test_cli_runner()
    return runner.invoke(args=["queue", *args], input=input)


def _assert_error(result: Result, *needles: str) -> None:
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in result.output


@pytest.fixture
def defined(env: Env) -> Env:
    @env.queue.task(name="t")
    def task(data: object) -> None:
        pass

    return env


@pytest.mark.parametrize(
    "args",
    [
        ("purge", "--failed", "--older-than", "100000000w", "--yes"),
        ("purge", "--failed", "--older-than", "nan", "--yes"),
        ("list", "--limit", "99999999999999999999"),
        ("list", "--limit", "-1"),
        ("show", "99999999999999999999"),
        ("show", "abc"),
        ("retry", "0"),
    ],
)
def test_out_of_range_argument_is_one_error_line(
    defined: Env, args: tuple[str, ...]
) -> None:
    _assert_error(_invoke(defined, *args))


def _export_line(**changes: t.Any) -> str:
    record = {
        "name": "t",
        "queue": "default",
        "priority": 0,
        "data": None,
        "created": "2026-01-01T00:00:00+00:00",
        "run_at": "2026-01-01T00:00:00+00:00",
        "failed_nr": 0,
        "failed_last": None,
        "failed_error": None,
        "unique_key": None,
        "status": "queued",
    }
    record.update(changes)
    return json.dumps(record)


@pytest.mark.parametrize(
    "line",
    [
        _export_line(priority=2**40),
        _export_line(run_at="9999-12-31T23:59:59+00:00"),
        _export_line(run_at="not a time"),
        _export_line(created="0001-01-01T00:00:00"),
        _export_line(name=5),
        "not json",
    ],
)
def test_import_of_a_bad_line_is_one_error_line_and_stores_nothing(
    defined: Env, tmp_path: Path, line: str
) -> None:
    good = _export_line()
    path = tmp_path / "tasks.jsonl"
    path.write_text(f"{good}\n{line}\n")
    _assert_error(_invoke(defined, "import", str(path)), "Line 2")
    with defined.app.app_context():
        assert defined.queue.count() == 0


def test_import_of_invalid_utf8_is_one_error_line(defined: Env, tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(_export_line().encode() + b"\n\xff\xfe\n")
    _assert_error(_invoke(defined, "import", str(path)))
    with defined.app.app_context():
        assert defined.queue.count() == 0


def test_a_good_export_line_imports(defined: Env, tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(_export_line() + "\n")
    result = _invoke(defined, "import", str(path))
    assert result.exit_code == 0, result.output
    with defined.app.app_context():
        assert defined.queue.count() == 1


@pytest.mark.parametrize("command", ["status", "list", "export"])
def test_commands_before_the_table_exists_say_so(env: Env, command: str) -> None:
    with env.app.app_context():
        env.db.drop_all()
    result = _invoke(env, command)
    _assert_error(result)
    assert "db.create_all()" in result.output or "migrat" in result.output


def test_a_row_with_a_corrupt_run_at_is_listed_and_shown(
    defined: Env, sqlite_uri: str
) -> None:
    env = defined
    with env.app.app_context():
        if env.db.engine.url.get_backend_name() != "sqlite":
            pytest.skip("PostgreSQL's timestamptz cannot hold a corrupt value")
        task_id = env.queue.perform("t", "\u00e9")
        with env.db.engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE {env.queue.Task.__table__.name} SET run_at = 'garbage'"
                f" WHERE id = {int(task_id)}"
            )
    for args in (("list",), ("list", "--json"), ("show", str(task_id)), ("status",)):
        result = _invoke(env, *args)
        assert result.exit_code == 0, (args, result.output)
        assert "Traceback" not in result.output
    assert "garbage" in _invoke(env, "show", str(task_id)).output


def test_the_dashboard_shows_a_corrupt_row_with_its_value(
    sqlite_uri: str, tmp_path: Path
) -> None:
    app, db, queue = create_test_app(
        sqlite_uri, tmp_path / "instance", PLAINQUEUE_DASHBOARD=True
    )
    queue.dashboard_auth(lambda: True)
    queue.task(name="t")(lambda data: None)
    with app.app_context():
        db.create_all()
        task_id = queue.perform("t", None)
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE {queue.Task.__table__.name} SET run_at = 'garbage'"
                f" WHERE id = {int(task_id)}"
            )
    client = app.test_client()
    assert client.get("/queue/tasks").status_code == 200
    page = client.get(f"/queue/tasks/{int(task_id)}")
    assert page.status_code == 200
    assert b"garbage" in page.data
    with app.app_context():
        db.engine.dispose()
