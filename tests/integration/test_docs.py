"""The README and the docs say only what is true: their code runs, their
commands parse, every config key and public name is documented, and every
included file exists."""

from __future__ import annotations

import ast
import datetime
import importlib
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import time
import types
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

import flask_plainqueue
from flask_plainqueue.cli import make_cli
from flask_plainqueue.config import DEFAULTS
from flask_plainqueue.retry import retry_delay

ROOT = Path(__file__).parent.parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
README = (ROOT / "README.md").read_text()

#: Docs pages this file checks (others' pages have their own tests).
PAGES = sorted(DOCS.glob("*.rst"))


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Import docs/examples/<name>.py once per test session."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module(name)


def _sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'docs.db'}"


# -- README -----------------------------------------------------------------


def test_readme_has_exactly_the_two_set_up_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    match = re.search(r"^TEST_COMMAND='(.*)'$", ci, re.M)
    assert match is not None, ".ci/run defines no TEST_COMMAND"
    commands = [block.strip() for block in _blocks(README, "sh")]
    assert commands == [
        "pip install -e . && flask --app example_app run",
        match.group(1),
    ]
    assert 'eval "$TEST_COMMAND' in ci


def test_readme_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (code,) = _blocks(README, "python")
    # Flask puts the instance folder, and with it "sqlite:///app.db", under the
    # working directory for a module it cannot import.
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, t.Any] = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    app: Flask = namespace["create_app"]()
    queue = namespace["queue"]
    with app.app_context():
        queue.perform(namespace["send_welcome"], {"email": "a@example.com"})
        assert capsys.readouterr().out == ""
        assert queue.drain() == 1
        assert capsys.readouterr().out == "Welcome, a@example.com\n"
        namespace["db"].engine.dispose()
    assert (tmp_path / "instance" / "app.db").exists()


def test_readme_links_exist() -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), target


# -- pages ------------------------------------------------------------------


def test_literalincludes_exist_with_their_markers() -> None:
    pattern = re.compile(
        r"^\.\. literalinclude:: (\S+)\n((?:[ \t]+:[\w-]+:.*\n)*)", re.M
    )
    seen = 0
    for page in PAGES:
        for path, options in pattern.findall(page.read_text()):
            target = (page.parent / path).resolve()
            assert target.is_file(), f"{page.name}: {path} does not exist"
            text = target.read_text()
            for marker in re.findall(
                r":(?:start-after|end-before|start-at|end-at): (.*)", options
            ):
                assert marker.strip() in text, f"{page.name}: {marker} not in {path}"
            for name in re.findall(r":pyobject: (\w+)", options):
                assert re.search(rf"^(?:async )?(?:def|class) {name}\b", text, re.M), (
                    f"{page.name}: no {name} in {path}"
                )
            seen += 1
    assert seen >= 10


def test_every_cited_test_exists() -> None:
    cited = re.findall(
        r"(tests/[\w/]+\.py)(?:::(\w+))?", "".join(p.read_text() for p in PAGES)
    )
    assert len(cited) >= 20
    for file, name in cited:
        path = ROOT / file
        assert path.is_file(), file
        if name:
            assert re.search(rf"^def {name}\(", path.read_text(), re.M), (file, name)


def test_every_config_key_is_documented_with_its_default() -> None:
    text = (DOCS / "config.rst").read_text()
    documented = dict(
        re.findall(
            r"^\.\. data:: (PLAINQUEUE_\w+)\n.*?Default: ``(.*?)``", text, re.S | re.M
        )
    )
    assert sorted(documented) == sorted(DEFAULTS)
    for key, default in documented.items():
        assert ast.literal_eval(default) == DEFAULTS[key], key


def test_every_public_name_is_in_the_api_reference() -> None:
    text = (DOCS / "api.rst").read_text()
    directives = set(
        re.findall(
            r"^\.\. (?:autoclass|autoexception|autofunction|data):: (\w+)", text, re.M
        )
    )
    assert set(flask_plainqueue.__all__) <= directives
    assert ".. automodule:: flask_plainqueue.signals" in text


def test_retry_formula_in_the_docs_is_the_code() -> None:
    text = (DOCS / "tasks.rst").read_text()
    assert (
        "delay = min(retry_max_delay, retry_interval * retry_backoff ** (failed_nr - 1))"
        in text
    )
    for failed_nr in range(1, 8):
        expected = min(600.0, 2.0 * 2.0 ** (failed_nr - 1))
        assert retry_delay(failed_nr, interval=2.0, backoff=2.0, max_delay=600.0) == (
            expected
        )


def _flask_queue_commands() -> list[list[str]]:
    """The ``flask ... queue ...`` command lines shown in the pages and examples."""
    lines = []
    for page in [*PAGES, *EXAMPLES.glob("*.service")]:
        for line in page.read_text().splitlines():
            line = line.strip()
            if not line.startswith(("$ ", "ExecStart=")):
                continue
            words = shlex.split(line.removeprefix("$ ").removeprefix("ExecStart="))
            if words[0].endswith("flask") and "queue" in words:
                lines.append(words)
    return lines


def test_documented_worker_commands_parse() -> None:
    group = make_cli(t.cast(t.Any, None))
    commands = _flask_queue_commands()
    work = [words for words in commands if words[words.index("queue") + 1] == "work"]
    assert len(work) >= 3
    for words in work:
        args = words[words.index("work") + 1 :]
        group.commands["work"].make_context("work", args)


def test_systemd_unit_waits_longer_than_the_grace_period() -> None:
    unit = (EXAMPLES / "plainqueue-worker.service").read_text()
    match = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M)
    assert match is not None
    assert int(match.group(1)) > DEFAULTS["PLAINQUEUE_SHUTDOWN_GRACE"]


# -- docs/examples: tasks.rst, testing.rst, migrating.rst -------------------


def test_testing_page_examples_pass(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            str(EXAMPLES / "test_with_queue.py"),
        ],
        cwd=tmp_path,
        # A clean run of that file alone, whatever options this run was given.
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout


@pytest.fixture
def tasks_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[types.ModuleType]:
    module = _load("tasks_app", monkeypatch)
    app = module.create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": _sqlite_uri(tmp_path)}
    )
    module.outbox.clear()
    module.crm_answers.clear()
    with app.app_context():
        yield module
        module.db.session.remove()
        module.db.engine.dispose()


def test_bare_task_is_named_after_module_and_function(
    tasks_app: types.ModuleType,
) -> None:
    assert tasks_app.cleanup.name == "tasks_app.cleanup"
    assert tasks_app.double_opt_in.name == "double_opt_in"


def test_sign_up_rollback_leaves_no_task(tasks_app: types.ModuleType) -> None:
    db, queue = tasks_app.db, tasks_app.queue
    db.session.add(tasks_app.Contact(email="x@example.com"))
    tasks_app.double_opt_in.perform({"email": "x@example.com"}, commit=False)
    db.session.rollback()
    assert db.session.scalars(select(queue.Task)).all() == []
    assert db.session.scalars(select(tasks_app.Contact)).all() == []


def _perform_typed(queue: flask_plainqueue.PlainQueue, task: t.Any) -> int:
    # Type-checked by mypy: a dict[str, str] is valid data (JSONValue is built
    # on Mapping and Sequence, not on the invariant dict and list).
    data: dict[str, str] = {"email": "typed@example.com"}
    batch: list[dict[str, str]] = [data]
    queue.perform_many(task, batch)
    return queue.perform(task, data)


def test_perform_accepts_typed_containers(tasks_app: types.ModuleType) -> None:
    _perform_typed(tasks_app.queue, tasks_app.double_opt_in)
    assert tasks_app.queue.drain() == 2
    assert tasks_app.outbox == ["typed@example.com", "typed@example.com"]


def test_async_task_example_runs(tasks_app: types.ModuleType) -> None:
    tasks_app.queue.perform_many(
        tasks_app.fetch_avatar, [{"email": f"{i}@example.com"} for i in range(3)]
    )
    assert tasks_app.queue.drain() == 3
    assert sorted(tasks_app.outbox) == [f"avatar:{i}@example.com" for i in range(3)]


def test_retry_example(tasks_app: types.ModuleType) -> None:
    db, queue = tasks_app.db, tasks_app.queue
    tasks_app.crm_answers[:] = ["busy", "down", "bad"]
    task_id = int(tasks_app.sync_crm.perform({"id": 7}))
    before = datetime.datetime.now(datetime.timezone.utc)

    assert queue.drain() == 1  # Retry(delay=30): not a failure, not due for 30 s
    task = db.session.get(queue.Task, task_id)
    assert task is not None
    assert (task.failed_nr, task.status) == (0, "queued")
    assert task.run_at >= before + datetime.timedelta(seconds=29)

    task.run_at = before  # due again
    db.session.commit()
    assert queue.drain() == 1  # ConnectionError: retried after 2 s (+ jitter)
    db.session.refresh(task)
    assert (task.failed_nr, task.status) == (1, "queued")

    task.run_at = before
    db.session.commit()
    assert queue.drain() == 1  # ValueError is not in retry_on: dead at once
    db.session.refresh(task)
    assert (task.failed_nr, task.status) == (2, "dead")
    assert task.failed_error is not None
    assert "ValueError: CRM rejected the record" in task.failed_error


def test_migrating_from_plainweb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _load("migrate_plainweb", monkeypatch)
    module.outbox.clear()
    path = tmp_path / "docs.db"
    now_ms = int(time.time() * 1000)
    with sqlite3.connect(path) as conn:
        # plainweb's table, as its drizzle schema creates it.
        conn.execute(
            "CREATE TABLE tasks (id text PRIMARY KEY, name text NOT NULL, data text,"
            " created integer NOT NULL, failed_last integer, failed_nr integer,"
            " failed_error text)"
        )
        conn.executemany(
            "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    "a",
                    "double-opt-in",
                    '{"email":"new@example.com"}',
                    now_ms,
                    None,
                    None,
                    None,
                ),
                (
                    "b",
                    "double-opt-in",
                    '{"email":"again@example.com"}',
                    now_ms,
                    now_ms,
                    2,
                    '{"instance":"Error","message":"smtp down","stack":""}',
                ),
                (
                    "c",
                    "double-opt-in",
                    '{"email":"dead@example.com"}',
                    now_ms,
                    now_ms,
                    6,
                    '{"instance":"Error","message":"bounced","stack":""}',
                ),
                ("d", "unknown-task", "null", now_ms, None, None, None),
            ],
        )
    conn.close()
    app = module.create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}"}
    )
    with app.app_context():
        assert module.copy_plainweb_tasks() == 4
        Task = module.queue.Task
        rows = module.db.session.scalars(select(Task).order_by(Task.id)).all()
        assert [(r.name, r.status, r.failed_nr) for r in rows] == [
            ("double-opt-in", "queued", 0),
            ("double-opt-in", "queued", 2),
            ("double-opt-in", "dead", 6),
            ("unknown-task", "queued", 0),
        ]
        assert rows[1].failed_error is not None and "smtp down" in rows[1].failed_error
        assert abs(rows[0].created.timestamp() * 1000 - now_ms) < 1

        assert module.queue.drain() == 2
        assert sorted(module.outbox) == ["again@example.com", "new@example.com"]
        module.db.session.remove()
        module.db.engine.dispose()
