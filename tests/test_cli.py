"""``flask queue`` inspection and admin commands, ``queue.cancel`` and
``queue.retry``: through click's runner on both databases, and each command
once in a real ``python -m flask`` subprocess."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import typing as t
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from click.testing import Result
from conftest import Env
from helpers import child_env
from helpers import flask_args

from flask_plainqueue import inspection
from flask_plainqueue import PlainQueue
from flask_plainqueue import PlainQueueError
from flask_plainqueue import TaskState
from flask_plainqueue.cli import parse_duration
from flask_plainqueue.inspection import error_summary
from flask_plainqueue.inspection import format_age

UTC = datetime.timezone.utc


class Ops(t.NamedTuple):
    env: Env
    queue: PlainQueue

    def cli(self, *args: str, input: str | None = None, color: bool = False) -> Result:
        return self.env.app.test_cli_runner().invoke(
            args=["queue", *args], input=input, color=color
        )

    def fail_dead(self, data: t.Any = None, *, name: str = "t.fail") -> str:
        """Perform a task that fails for good, run it, and return its id."""
        task_id = self.queue.perform(name, data)
        self.queue.drain()
        return task_id

    def row(self, task_id: str) -> t.Any:
        table = self.queue.Task.__table__
        with self.env.db.engine.connect() as conn:
            return conn.execute(
                sa.select(table).where(table.c.id == int(task_id))
            ).first()

    def claim(self, name: str, owner: str = "host:1:abc") -> list[str]:
        """Claim due tasks of ``name`` as a worker would (they are running)."""
        now = datetime.datetime.now(UTC)
        storage = self.queue._state().storage
        claimed = storage.claim(
            owner=owner,
            names=[name],
            batch_sizes={name: 100},
            now=now,
            until=now + datetime.timedelta(seconds=300),
        )
        return [str(c.id) for c in claimed]


@pytest.fixture
def ops(env: Env) -> Iterator[Ops]:
    queue = env.queue

    @queue.task(name="t.ok")
    def ok(data: t.Any) -> None:
        pass

    @queue.task(name="t.fail", max_retries=0)
    def fail(data: t.Any) -> None:
        raise ValueError(f"bad input {data!r}\nsecond line")

    @queue.task(name="t.other", max_retries=0)
    def other(data: t.Any) -> None:
        raise KeyError("missing")

    with env.app.app_context():
        yield Ops(env, queue)


# -- helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("2h", 7200),
        ("7d", 604800),
        ("1w", 604800),
        ("90", 90),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7x", "-1d", "d", "1.d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(click.BadParameter, match="e.g. 30s, 15m, 2h, 7d"):
        parse_duration(text)


def test_format_age() -> None:
    assert format_age(5) == "5s"
    assert format_age(185) == "3m 5s"
    assert format_age(7260) == "2h 1m"
    assert format_age(3 * 86400) == "3d"


def test_error_summary_is_the_exception_line() -> None:
    try:
        raise ValueError("first\nsecond")
    except ValueError as exc:
        import traceback

        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert error_summary(text) == "ValueError: first"
    assert error_summary(None) == ""
    assert error_summary("plain message") == "plain message"


# -- queue.cancel / queue.retry ----------------------------------------------


def test_cancel_removes_waiting_tasks(ops: Ops) -> None:
    dead = ops.fail_dead()
    pending = ops.queue.perform("t.ok", 1)
    scheduled = ops.queue.perform("t.ok", 2, delay=3600)
    for task_id in (pending, scheduled, dead):
        assert ops.queue.cancel(task_id) is True
        assert ops.row(task_id) is None
    assert ops.queue.cancel(pending) is False  # gone
    assert ops.queue.cancel("not-an-id") is False


def test_cancel_refuses_a_running_task(ops: Ops) -> None:
    task_id = ops.queue.perform("t.ok", 1)
    assert ops.claim("t.ok") == [task_id]
    assert ops.queue.cancel(task_id) is False
    assert ops.row(task_id) is not None


def test_retry_dead_task_resets_failures_and_runs_again(ops: Ops) -> None:
    task_id = ops.fail_dead({"n": 1})
    before = ops.row(task_id)
    assert before.status == "dead" and before.failed_nr == 1
    assert ops.queue.retry(task_id) is True
    row = ops.row(task_id)
    assert row.status == "queued"
    assert row.failed_nr == 0
    assert row.run_at <= datetime.datetime.now(UTC)
    info = inspection.get_task(ops.queue._state().storage, task_id)
    assert info is not None and info.state is TaskState.PENDING
    # It runs again (and, failing at once for good, is dead again).
    assert ops.queue.drain() == 1
    assert ops.row(task_id).status == "dead"


def test_retry_scheduled_task_makes_it_due(ops: Ops) -> None:
    task_id = ops.queue.perform("t.ok", 1, delay=3600)
    assert ops.queue.drain() == 0
    assert ops.queue.retry(task_id) is True
    assert ops.queue.drain() == 1
    assert ops.row(task_id) is None


def test_retry_refuses_running_and_gone(ops: Ops) -> None:
    task_id = ops.queue.perform("t.ok", 1)
    ops.claim("t.ok")
    assert ops.queue.retry(task_id) is False
    assert ops.row(task_id).lease_owner == "host:1:abc"
    assert ops.queue.retry("999999") is False
    assert ops.queue.retry("abc") is False


def test_retry_of_unique_task_whose_key_is_taken_is_a_clear_error(ops: Ops) -> None:
    dead = ops.queue.perform("t.fail", 1, unique_key="k")
    ops.queue.drain()
    waiting = ops.queue.perform("t.fail", 2, unique_key="k", delay=3600)
    assert waiting != dead
    with pytest.raises(PlainQueueError, match="another task with that key is waiting"):
        ops.queue.retry(dead)
    # The bulk form skips it instead of failing the rest.
    other = ops.fail_dead(name="t.other")
    retried = inspection.retry_dead(ops.queue._state().storage)
    assert retried == [other]


def test_bulk_retry_brings_back_one_of_two_dead_tasks_with_one_key(ops: Ops) -> None:
    first = ops.queue.perform("t.fail", 1, unique_key="k")
    ops.queue.drain()
    second = ops.queue.perform("t.fail", 2, unique_key="k")
    ops.queue.drain()
    retried = inspection.retry(ops.queue._state().storage, [first, second])
    assert retried == [first]
    assert ops.row(second).status == "dead"


# -- inspection ---------------------------------------------------------------


def test_status_counts_every_state(ops: Ops) -> None:
    ops.queue.perform("t.ok", 1)
    ops.queue.perform("t.ok", 2, delay=3600)
    running = ops.queue.perform("t.other", 3)
    ops.claim("t.other", owner="host:7:w")
    ops.fail_dead()
    ops.fail_dead()
    # drain ran the pending t.ok too; enqueue one more to keep one pending.
    ops.queue.perform("t.ok", 4)
    result = inspection.status(ops.queue._state().storage)
    assert result.counts == {
        "t.fail": {
            TaskState.PENDING: 0,
            TaskState.SCHEDULED: 0,
            TaskState.RUNNING: 0,
            TaskState.DEAD: 2,
        },
        "t.ok": {
            TaskState.PENDING: 1,
            TaskState.SCHEDULED: 1,
            TaskState.RUNNING: 0,
            TaskState.DEAD: 0,
        },
        "t.other": {
            TaskState.PENDING: 0,
            TaskState.SCHEDULED: 0,
            TaskState.RUNNING: 1,
            TaskState.DEAD: 0,
        },
    }
    assert result.workers == {"host:7:w": 1}
    assert result.totals[TaskState.DEAD] == 2
    assert running not in (result.oldest_pending_id,)


def test_oldest_pending_age_and_expired_lease_is_pending(ops: Ops) -> None:
    storage = ops.queue._state().storage
    first = ops.queue.perform("t.ok", 1)
    ops.queue.perform("t.ok", 2)
    later = datetime.datetime.now(UTC) + datetime.timedelta(seconds=90)
    result = inspection.status(storage, now=later)
    assert result.oldest_pending_id == first
    assert (
        result.oldest_pending_age is not None and 89 < result.oldest_pending_age < 200
    )
    ops.claim("t.ok")
    assert inspection.status(storage).oldest_pending_age is None
    # After the lease (300 s) the claimed rows count as pending again.
    expired = datetime.datetime.now(UTC) + datetime.timedelta(seconds=400)
    counts = inspection.status(storage, now=expired).counts["t.ok"]
    assert counts[TaskState.PENDING] == 2 and counts[TaskState.RUNNING] == 0


def test_list_pages_and_filters(ops: Ops) -> None:
    storage = ops.queue._state().storage
    ids = ops.queue.perform_many("t.ok", list(range(7)), delay=60)
    page1 = inspection.list_tasks(storage, limit=3)
    page3 = inspection.list_tasks(storage, limit=3, offset=6)
    assert [i.id for i in page1] == ids[:3]
    assert [i.id for i in page3] == ids[6:]
    assert inspection.count_tasks(storage, states=[TaskState.SCHEDULED]) == 7
    assert inspection.count_tasks(storage, states=[TaskState.PENDING]) == 0
    assert inspection.list_tasks(storage, name="t.nothing") == []
    assert inspection.task_names(storage) == ["t.ok"]


def test_purge_deletes_only_old_dead_tasks(ops: Ops) -> None:
    storage = ops.queue._state().storage
    old = ops.fail_dead(1)
    new = ops.fail_dead(2)
    waiting = ops.queue.perform("t.ok", 3, delay=3600)
    table = ops.queue.Task.__table__
    long_ago = datetime.datetime.now(UTC) - datetime.timedelta(days=10)
    with ops.env.db.engine.begin() as conn:
        conn.execute(
            sa.update(table).where(table.c.id == int(old)).values(failed_last=long_ago)
        )
    assert inspection.count_dead(storage, older_than=7 * 86400) == 1
    assert inspection.purge_dead(storage, older_than=7 * 86400) == 1
    assert ops.row(old) is None
    assert ops.row(new) is not None
    assert inspection.purge_dead(storage) == 1
    assert ops.row(new) is None
    assert ops.row(waiting) is not None


def test_purge_works_in_batches(ops: Ops, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inspection, "PURGE_BATCH", 2)
    for n in range(5):
        ops.queue.perform("t.fail", n)
    ops.queue.drain()
    assert inspection.purge_dead(ops.queue._state().storage) == 5
    assert inspection.count_dead(ops.queue._state().storage) == 0


# -- the commands through click's runner ----------------------------------------


def test_status_command(ops: Ops) -> None:
    result = ops.cli("status")
    assert result.exit_code == 0, result.output
    assert "The queue is empty." in result.output
    ops.fail_dead()
    ops.queue.perform("t.ok", 1)
    result = ops.cli("status")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["TASK", "PENDING", "SCHEDULED", "RUNNING", "DEAD"]
    assert lines[1].split() == ["t.fail", "0", "0", "0", "1"]
    assert lines[2].split() == ["t.ok", "1", "0", "0", "0"]
    assert lines[3].split() == ["(total)", "1", "0", "0", "1"]
    # Columns are aligned: every count ends where its header ends.
    assert len({len(line) for line in lines[:4]}) == 1
    assert re.search(r"Oldest pending: \d+s \(task \d+\)", result.output)
    assert "\x1b[" not in result.output


def test_status_json(ops: Ops) -> None:
    ops.fail_dead()
    ops.queue.perform("t.ok", 1)
    ops.claim("t.ok", owner="w-1")
    result = ops.cli("status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["tasks"]["t.fail"] == {
        "pending": 0,
        "scheduled": 0,
        "running": 0,
        "dead": 1,
    }
    assert data["total"]["running"] == 1
    assert data["workers"] == {"w-1": 1}
    assert data["oldest_pending_age"] is None


def test_list_command_columns_and_filters(ops: Ops) -> None:
    dead = ops.fail_dead({"x": 1})
    other = ops.fail_dead(name="t.other")
    waiting = ops.queue.perform("t.ok", 1, delay=3600)
    result = ops.cli("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = lines[0]
    assert header.split() == [
        "ID",
        "NAME",
        "STATE",
        "ATTEMPTS",
        "DUE/CREATED",
        "LAST",
        "ERROR",
    ]
    starts = [header.index(h) for h in ("NAME", "STATE", "ATTEMPTS", "DUE/CREATED")]
    by_id = {line.split()[0]: line for line in lines[1:]}
    for line in by_id.values():
        for start in starts:
            # Each column starts where its header does (preceded by spaces).
            assert line[start - 2 : start] == "  " and line[start] != " "
    assert "ValueError: bad input {'x': 1}" in by_id[dead]
    assert "second line" not in result.output
    assert "KeyError: 'missing'" in by_id[other]
    assert by_id[waiting].split()[2] == "scheduled"

    failed = ops.cli("list", "--failed")
    assert {line.split()[0] for line in failed.output.splitlines()[1:]} == {dead, other}
    named = ops.cli("list", "--failed", "--name", "t.other")
    assert [line.split()[0] for line in named.output.splitlines()[1:]] == [other]
    state = ops.cli("list", "--state", "scheduled")
    assert [line.split()[0] for line in state.output.splitlines()[1:]] == [waiting]
    limited = ops.cli("list", "--limit", "1")
    assert len(limited.output.splitlines()) == 3
    assert "(1 of 3 shown; use --limit to see more)" in limited.output
    assert ops.cli("list", "--name", "nothing").output == "No tasks.\n"
    assert ops.cli("list", "--limit", "0").exit_code == 2


def test_show_command(ops: Ops) -> None:
    task_id = ops.fail_dead({"email": "a@example.com", "n": [1, 2]})
    result = ops.cli("show", task_id)
    assert result.exit_code == 0, result.output
    assert re.search(rf"^id\s+{task_id}$", result.output, re.M)
    assert re.search(r"^state\s+dead$", result.output, re.M)
    # jsonb (PostgreSQL) may reorder keys; the indentation shows it is pretty.
    assert re.search(r'^  "email": "a@example.com",?$', result.output, re.M)
    assert "Traceback (most recent call last):" in result.output
    assert 'raise ValueError(f"bad input {data!r}\\nsecond line")' in result.output
    assert "second line" in result.output

    missing = ops.cli("show", "424242")
    assert missing.exit_code == 1
    assert "No task 424242." in missing.stderr


def test_retry_command_ids(ops: Ops) -> None:
    dead = ops.fail_dead()
    result = ops.cli("retry", dead)
    assert result.exit_code == 0, result.output
    assert result.output == f"Retried task {dead} (t.fail).\n"
    assert ops.row(dead).status == "queued"

    running = ops.queue.perform("t.ok", 1)
    ops.claim("t.ok")
    result = ops.cli("retry", running, "99999")
    assert result.exit_code == 1
    assert f"Task {running} (t.ok) is running; not retried." in result.stderr
    assert "No task 99999." in result.stderr


def test_retry_command_unique_conflict_is_reported(ops: Ops) -> None:
    dead = ops.queue.perform("t.fail", 1, unique_key="k")
    ops.queue.drain()
    ops.queue.perform("t.fail", 2, unique_key="k", delay=3600)
    result = ops.cli("retry", dead)
    assert result.exit_code == 1
    assert "another task with that key is waiting" in result.stderr


@pytest.mark.parametrize(
    "args",
    [(), ("1", "--all-failed"), ("1", "--name", "t.fail"), ("--name", "t.fail")],
)
def test_retry_command_usage_errors(ops: Ops, args: tuple[str, ...]) -> None:
    result = ops.cli("retry", *args)
    assert result.exit_code == 2
    assert "Usage:" in result.output


def test_retry_all_failed_asks_first(ops: Ops) -> None:
    a = ops.fail_dead(1)
    b = ops.fail_dead(2)
    c = ops.fail_dead(name="t.other")
    refused = ops.cli("retry", "--all-failed", input="n\n")
    assert refused.exit_code == 1
    assert "Retry 3 dead tasks? [y/N]" in refused.output
    assert all(ops.row(i).status == "dead" for i in (a, b, c))

    named = ops.cli("retry", "--all-failed", "--name", "t.fail", input="y\n")
    assert named.exit_code == 0, named.output
    assert "Retry 2 dead tasks of t.fail?" in named.output
    assert "Retried 2 tasks." in named.output
    assert ops.row(a).status == ops.row(b).status == "queued"
    assert ops.row(c).status == "dead"

    rest = ops.cli("retry", "--all-failed", "--yes")
    assert rest.output == "Retried 1 task.\n"
    assert ops.cli("retry", "--all-failed").output == "No dead tasks to retry.\n"


def test_delete_command(ops: Ops) -> None:
    b = ops.fail_dead()
    a = ops.queue.perform("t.ok", 1, delay=60)
    running = ops.queue.perform("t.ok", 2)
    result = ops.cli("delete", a, b)
    assert result.exit_code == 0, result.output
    assert result.output == f"Deleted task {a} (t.ok).\nDeleted task {b} (t.fail).\n"
    assert ops.row(a) is None and ops.row(b) is None

    ops.claim("t.ok")
    result = ops.cli("delete", running, a)
    assert result.exit_code == 1
    assert f"Task {running} (t.ok) is running; not deleted." in result.stderr
    assert f"No task {a}." in result.stderr
    assert ops.row(running) is not None
    assert ops.cli("delete").exit_code == 2


def test_purge_command(ops: Ops) -> None:
    old = ops.fail_dead(1)
    new = ops.fail_dead(2)
    table = ops.queue.Task.__table__
    long_ago = datetime.datetime.now(UTC) - datetime.timedelta(days=8)
    with ops.env.db.engine.begin() as conn:
        conn.execute(
            sa.update(table).where(table.c.id == int(old)).values(failed_last=long_ago)
        )
    assert ops.cli("purge").exit_code == 2
    assert ops.cli("purge", "--failed", "--older-than", "soon").exit_code == 2

    refused = ops.cli("purge", "--failed", "--older-than", "7d", input="n\n")
    assert refused.exit_code == 1
    assert "Delete 1 dead task that failed over 7d ago? [y/N]" in refused.output
    assert ops.row(old) is not None

    done = ops.cli("purge", "--failed", "--older-than", "7d", "--yes")
    assert done.exit_code == 0, done.output
    assert done.output == "Deleted 1 dead task that failed over 7d ago.\n"
    assert ops.row(old) is None and ops.row(new) is not None
    assert ops.cli("purge", "--failed", "--older-than", "7d").output == (
        "No dead tasks that failed over 7d ago.\n"
    )
    assert ops.cli("purge", "--failed", "-y").output == "Deleted 1 dead task.\n"


def test_plainqueue_error_becomes_a_click_error(
    ops: Ops, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise PlainQueueError("something to fix")

    monkeypatch.setattr(inspection, "status", broken)
    result = ops.cli("status")
    assert result.exit_code == 1
    assert "Error: something to fix" in result.stderr
    assert "Traceback" not in result.output


def test_colour_only_when_asked(ops: Ops) -> None:
    ops.fail_dead()
    plain = ops.cli("list")
    coloured = ops.cli("list", color=True)
    assert "\x1b[" not in plain.output
    assert "\x1b[31mdead" in coloured.output


# -- real subprocesses ----------------------------------------------------------


@pytest.fixture
def ops_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[t.Any]:
    """``tests/apps/opsapp.py`` on a SQLite file, and a runner for
    ``python -m flask --app opsapp:create_app queue ...``."""
    from helpers import APPS

    monkeypatch.syspath_prepend(str(APPS))
    monkeypatch.setenv("OPSAPP_DATABASE_URI", f"sqlite:///{tmp_path / 'ops.db'}")
    monkeypatch.setenv("OPSAPP_INSTANCE_PATH", str(tmp_path / "instance"))
    import opsapp

    app = opsapp.create_app()
    env = child_env(
        OPSAPP_DATABASE_URI=f"sqlite:///{tmp_path / 'ops.db'}",
        OPSAPP_INSTANCE_PATH=str(tmp_path / "instance"),
    )

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            flask_args("opsapp:create_app", "queue", *args),
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )

    with app.app_context():
        yield app, opsapp.queue, run
        opsapp.db.session.remove()
        opsapp.db.engine.dispose()


def test_commands_in_a_real_process(ops_process: t.Any) -> None:
    app, queue, run = ops_process
    dead = queue.perform("ops.fail", {"error": "kaputt"})
    queue.drain()
    waiting = queue.perform("ops.ok", 1, delay=3600)

    status = run("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["total"] == {
        "pending": 0,
        "scheduled": 1,
        "running": 0,
        "dead": 1,
    }

    listed = run("list", "--failed")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:3] == [dead, "ops.fail", "dead"]
    assert "ValueError: kaputt" in listed.stdout
    assert "\x1b[" not in listed.stdout  # not a TTY: no colour

    shown = run("show", dead)
    assert shown.returncode == 0, shown.stderr
    assert '"error": "kaputt"' in shown.stdout and "Traceback" in shown.stdout
    assert run("show", "999").returncode == 1

    retried = run("retry", dead)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout == f"Retried task {dead} (ops.fail).\n"
    queue.drain()  # dead again
    assert run("retry").returncode == 2
    bulk = run("retry", "--all-failed", input="y\n")
    assert bulk.returncode == 0, bulk.stderr
    assert "Retried 1 task." in bulk.stdout
    queue.drain()

    deleted = run("delete", waiting)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == f"Deleted task {waiting} (ops.ok).\n"
    assert run("delete", waiting).returncode == 1

    purged = run("purge", "--failed", "--older-than", "0s", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout == "Deleted 1 dead task that failed over 0s ago.\n"
    final = run("status")
    assert final.returncode == 0 and "The queue is empty." in final.stdout


@pytest.mark.postgresql
def test_retry_notifies_idle_workers_on_postgresql(
    postgresql_uri: str, tmp_path: Path
) -> None:
    import queue as queue_module

    from conftest import create_test_app

    from flask_plainqueue.notify import Listener

    app, db, queue = create_test_app(postgresql_uri, tmp_path)

    @queue.task(name="t.fail", max_retries=0)
    def fail(data: t.Any) -> None:
        raise ValueError("no")

    received: queue_module.Queue[str | None] = queue_module.Queue()
    with app.app_context():
        db.create_all()
        task_id = queue.perform(fail, 1)
        queue.drain()
        listener = Listener(queue._state().storage, received.put, name="test")
        listener.start()
        try:
            assert listener.wait_listening(60)
            assert received.get(timeout=60) is None  # "you may have missed some"
            assert queue.retry(task_id) is True
            assert received.get(timeout=60) == ""
        finally:
            listener.stop()
            db.session.remove()
            db.engine.dispose()
