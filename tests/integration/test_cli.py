"""``flask queue`` inspection and admin commands through Flask's CLI runner,
and the queue's public read/admin API under them (``queue.get``, ``tasks``,
``count``, ``status``, ``names``, ``retry``, ``retry_failed``, ``cancel``,
``purge``), on both databases. One real-process run per command group is in
``tests/processes/test_cli_smoke.py``."""

from __future__ import annotations

import datetime
import json
import logging
import queue as queue_module
import re
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from conftest import create_test_app
from conftest import Env
from helpers import Ops
from helpers import OWNER

from flask_plainqueue import InvalidArgument
from flask_plainqueue import PlainQueueError
from flask_plainqueue import TaskState
from flask_plainqueue import UniqueTaskWaiting
from flask_plainqueue.clock import as_utc

#: The owner ``Ops.claim`` leases tasks to, like a worker's id.


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

    @queue.task(name="t.mail", queue="emails", priority=2)
    def mail(data: t.Any) -> None:
        pass

    with env.app.app_context():
        yield Ops(env, queue)


def _ids(result: Result) -> list[int]:
    """The ids in the first column of ``list``'s output."""
    return [int(line.split()[0]) for line in result.output.splitlines()[1:]]


# -- queue.cancel / queue.retry ----------------------------------------------


def test_cancel_removes_waiting_tasks(ops: Ops) -> None:
    dead = ops.fail_dead()
    pending = ops.queue.perform("t.ok", 1)
    scheduled = ops.queue.perform("t.ok", 2, delay=3600)
    for task_id in (pending, scheduled, dead):
        assert isinstance(task_id, int)
        assert ops.queue.cancel(task_id) is True
        assert ops.row(task_id) is None
        assert ops.queue.get(task_id) is None
    assert ops.queue.cancel(pending) is False  # gone
    assert ops.queue.delete(pending) is False  # the same as cancel


def test_ids_are_ints_and_anything_else_is_refused(ops: Ops) -> None:
    task_id = ops.queue.perform("t.ok", 1, delay=60)
    assert ops.info(task_id).id == task_id == int(task_id)
    assert [i.id for i in ops.queue.tasks()] == [task_id]
    # A string (even of the right number) is parsed only at the CLI and URL
    # edge: the Python API refuses it as a bug in the caller, changing nothing.
    for wrong in (str(task_id), "not-an-id", True, float(task_id), None):
        for method in (ops.queue.cancel, ops.queue.retry, ops.queue.get):
            with pytest.raises(InvalidArgument, match="task_id must be an int"):
                method(wrong)  # type: ignore[arg-type]
    assert issubclass(InvalidArgument, TypeError)
    # Ids that cannot exist are "not found", never a database error.
    for impossible in (0, -1, 2**63, 2**80):
        assert ops.queue.cancel(impossible) is False
        assert ops.queue.retry(impossible) is False
        assert ops.queue.get(impossible) is None
    assert ops.info(task_id).state is TaskState.SCHEDULED


def test_cancel_refuses_a_running_task(ops: Ops) -> None:
    task_id = ops.queue.perform("t.ok", 1)
    assert ops.claim("t.ok") == [task_id]
    assert ops.queue.cancel(task_id) is False
    assert ops.row(task_id) is not None
    assert ops.info(task_id).state is TaskState.RUNNING


def test_retry_dead_task_resets_failures_and_runs_again(ops: Ops) -> None:
    task_id = ops.fail_dead({"n": 1})
    before = ops.row(task_id)
    assert before.status == "dead" and before.failed_nr == 1
    assert ops.info(task_id).state is TaskState.DEAD
    assert ops.queue.retry(task_id) is True
    row = ops.row(task_id)
    assert row.status == "queued"
    assert row.failed_nr == 0
    assert as_utc(row.run_at) <= datetime.datetime.now(datetime.timezone.utc)
    info = ops.info(task_id)
    assert info.state is TaskState.PENDING and info.failed_nr == 0
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
    assert ops.row(task_id).lease_owner == OWNER
    assert ops.info(task_id).lease_owner == OWNER
    assert ops.queue.retry(999999) is False


def test_retry_of_unique_task_whose_key_is_taken_is_a_clear_error(ops: Ops) -> None:
    dead = ops.queue.perform("t.fail", 1, unique_key="k")
    ops.queue.drain()
    waiting = ops.queue.perform("t.fail", 2, unique_key="k", delay=3600)
    assert waiting != dead and waiting.new and dead.new
    assert ops.queue.perform("t.fail", 3, unique_key="k") == waiting
    with pytest.raises(
        UniqueTaskWaiting, match="another task with that key is waiting"
    ):
        ops.queue.retry(dead)
    assert issubclass(UniqueTaskWaiting, PlainQueueError)
    # The bulk form skips it instead of failing the rest.
    other = ops.fail_dead(name="t.other")
    assert ops.queue.retry_failed() == [other]
    assert ops.row(dead).status == "dead"


def test_bulk_retry_brings_back_one_of_two_dead_tasks_with_one_key(ops: Ops) -> None:
    first = ops.queue.perform("t.fail", 1, unique_key="k")
    ops.queue.drain()
    second = ops.queue.perform("t.fail", 2, unique_key="k")
    ops.queue.drain()
    assert ops.queue.count(state=TaskState.DEAD) == 2
    assert ops.queue.retry_failed(name="t.fail") == [first]
    assert ops.row(first).status == "queued"
    assert ops.row(second).status == "dead"


def test_retry_failed_of_a_name(ops: Ops) -> None:
    fails = [ops.fail_dead(n) for n in range(2)]
    other = ops.fail_dead(name="t.other")
    assert ops.queue.retry_failed(name="t.nothing") == []
    assert ops.queue.retry_failed(name="t.fail") == sorted(fails)
    assert ops.row(other).status == "dead"
    assert ops.queue.retry_failed() == [other]
    assert ops.queue.retry_failed() == []


# -- reading ------------------------------------------------------------------


def test_status_counts_every_state(ops: Ops) -> None:
    ops.queue.perform("t.ok", 1)
    ops.queue.perform("t.ok", 2, delay=3600)
    running = ops.queue.perform("t.other", 3)
    ops.claim("t.other", owner="host:7:w")
    ops.fail_dead()
    ops.fail_dead()
    # drain ran the pending t.ok too; enqueue one more to keep one pending.
    pending = ops.queue.perform("t.ok", 4)
    result = ops.queue.status()
    assert result.counts == {
        "t.fail": {
            TaskState.PENDING: 0,
            TaskState.SCHEDULED: 0,
            TaskState.RUNNING: 0,
            TaskState.SUCCEEDED: 0,
            TaskState.DEAD: 2,
        },
        "t.ok": {
            TaskState.PENDING: 1,
            TaskState.SCHEDULED: 1,
            TaskState.RUNNING: 0,
            TaskState.SUCCEEDED: 0,
            TaskState.DEAD: 0,
        },
        "t.other": {
            TaskState.PENDING: 0,
            TaskState.SCHEDULED: 0,
            TaskState.RUNNING: 1,
            TaskState.SUCCEEDED: 0,
            TaskState.DEAD: 0,
        },
    }
    assert ops.queue.counts() == result.counts
    assert result.workers == {"host:7:w": 1}
    assert result.totals[TaskState.DEAD] == 2
    assert result.oldest_pending_id == pending != running
    assert isinstance(result.oldest_pending_id, int)


def test_oldest_pending_age_and_expired_lease_is_pending(
    ops: Ops, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ops.queue.perform("t.ok", 1)
    ops.queue.perform("t.ok", 2)
    with monkeypatch.context() as later:
        ops.travel(later, 90)
        result = ops.queue.status()
    assert result.oldest_pending_id == first
    assert (
        result.oldest_pending_age is not None and 89 < result.oldest_pending_age < 200
    )
    ops.claim("t.ok")
    assert ops.queue.status().oldest_pending_age is None
    assert ops.queue.count(state=TaskState.RUNNING) == 2
    # After the lease (300 s) the claimed rows count as pending again.
    ops.travel(monkeypatch, 400)
    counts = ops.queue.status().counts["t.ok"]
    assert counts[TaskState.PENDING] == 2 and counts[TaskState.RUNNING] == 0
    assert ops.info(first).state is TaskState.PENDING
    assert ops.queue.status().workers == {}


def test_list_pages_and_filters(ops: Ops) -> None:
    ids = ops.queue.perform_many("t.ok", list(range(7)), delay=60)
    mail = ops.queue.perform("t.mail", {"to": "a@example.com"})
    page1 = ops.queue.tasks(state=TaskState.SCHEDULED, limit=3)
    page3 = ops.queue.tasks(state=TaskState.SCHEDULED, limit=3, offset=6)
    assert [i.id for i in page1] == ids[:3]
    assert [i.id for i in page3] == ids[6:]
    assert ops.queue.count(state=[TaskState.SCHEDULED]) == 7
    assert ops.queue.count(state=TaskState.PENDING) == 1
    assert ops.queue.count() == 8
    assert ops.queue.tasks(name="t.nothing") == []
    assert ops.queue.names() == ["t.mail", "t.ok"]
    # Queues: a filter of their own, alone or with the others.
    assert [i.id for i in ops.queue.tasks(queue="emails")] == [mail]
    assert ops.queue.count(queue="default") == 7
    assert ops.queue.count(queue="emails", state=TaskState.SCHEDULED) == 0
    info = ops.info(mail)
    assert (info.queue, info.priority, info.state) == ("emails", 2, TaskState.PENDING)
    # Higher priority first in the full list.
    assert ops.queue.tasks(limit=1)[0].id == mail


def test_purge_deletes_only_old_dead_tasks(ops: Ops) -> None:
    old = ops.fail_dead(1)
    new = ops.fail_dead(2)
    waiting = ops.queue.perform("t.ok", 3, delay=3600)
    long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        days=10
    )
    ops.set_row(old, failed_last=long_ago)
    week = 7 * 86400
    assert ops.queue.purge(older_than=week, dry_run=True) == 1
    assert ops.queue.count(state=TaskState.DEAD) == 2
    assert ops.queue.purge(older_than=datetime.timedelta(days=7)) == 1
    assert ops.row(old) is None
    assert ops.row(new) is not None
    assert ops.queue.purge(name="t.other") == 0
    assert ops.queue.purge() == 1
    assert ops.row(new) is None
    assert ops.row(waiting) is not None


def test_purge_works_in_batches(ops: Ops) -> None:
    for n in range(5):
        ops.queue.perform("t.fail", n)
    ops.queue.drain()
    store = ops.queue.store()
    assert store.delete_dead(batch=2, max_batches=1) == 2
    assert ops.queue.count(state=TaskState.DEAD) == 3
    assert store.delete_dead(batch=2) == 3
    assert ops.queue.count(state=TaskState.DEAD) == 0


# -- the commands through the CLI runner -----------------------------------------


def test_status_command(ops: Ops) -> None:
    result = ops.cli("status")
    assert result.exit_code == 0, result.output
    assert "The queue is empty." in result.output
    assert "Oldest pending: none (nothing is due)" in result.output
    ops.fail_dead()
    ops.queue.perform("t.ok", 1)
    result = ops.cli("status")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "TASK",
        "QUEUE",
        "PENDING",
        "SCHEDULED",
        "RUNNING",
        "SUCCEEDED",
        "DEAD",
    ]
    assert lines[1].split() == ["t.fail", "default", "0", "0", "0", "0", "1"]
    assert lines[2].split() == ["t.ok", "default", "1", "0", "0", "0", "0"]
    assert lines[3].split() == ["(total)", "1", "0", "0", "0", "1"]
    # Columns are aligned: every count ends where its header ends.
    assert len({len(line) for line in lines[:4]}) == 1
    assert re.search(r"Oldest pending: \d+s \(task \d+\)", result.output)
    assert "Workers running tasks now: none" in result.output
    assert "\x1b[" not in result.output

    ops.queue.perform("t.ok", 2)
    ops.claim("t.ok", owner="w-9")
    result = ops.cli("status")
    assert "Workers running tasks now:\n  w-9  2 tasks" in result.output


def test_status_json(ops: Ops) -> None:
    dead = ops.fail_dead()
    ops.queue.perform("t.ok", 1)
    ops.claim("t.ok", owner="w-1")
    ops.queue.perform("t.ok", 2, delay=3600)
    result = ops.cli("status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["tasks"]["t.fail"] == {
        "pending": 0,
        "scheduled": 0,
        "running": 0,
        "succeeded": 0,
        "dead": 1,
    }
    assert data["total"] == {
        "pending": 0,
        "scheduled": 1,
        "running": 1,
        "succeeded": 0,
        "dead": 1,
    }
    assert data["workers"] == {"w-1": 1}
    assert data["oldest_pending_age"] is None
    assert data["oldest_pending_id"] is None
    assert ops.queue.status().as_dict() == data
    ops.queue.retry(dead)
    data = json.loads(ops.cli("status", "--json").output)
    assert data["oldest_pending_id"] == dead


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
        "QUEUE",
        "ATTEMPTS",
        "DUE/CREATED",
        "LAST",
        "ERROR",
    ]
    starts = [
        header.index(h) for h in ("NAME", "STATE", "QUEUE", "ATTEMPTS", "DUE/CREATED")
    ]
    by_id = {int(line.split()[0]): line for line in lines[1:]}
    assert set(by_id) == {dead, other, waiting}
    for line in by_id.values():
        for start in starts:
            # Each column starts where its header does (preceded by spaces).
            assert line[start - 2 : start] == "  " and line[start] != " "
    assert "ValueError: bad input {'x': 1}" in by_id[dead]
    assert "second line" not in result.output
    assert "KeyError: 'missing'" in by_id[other]
    assert by_id[waiting].split()[1:5] == ["t.ok", "scheduled", "default", "0"]
    assert by_id[dead].split()[1:5] == ["t.fail", "dead", "default", "1"]

    failed = ops.cli("list", "--failed")
    assert set(_ids(failed)) == {dead, other}
    named = ops.cli("list", "--failed", "--name", "t.other")
    assert _ids(named) == [other]
    state = ops.cli("list", "--state", "scheduled")
    assert _ids(state) == [waiting]
    both = ops.cli("list", "--state", "scheduled", "--failed")
    assert set(_ids(both)) == {dead, other, waiting}
    limited = ops.cli("list", "--limit", "1")
    assert len(limited.output.splitlines()) == 3
    assert "(1 of 3 shown; use --limit to see more)" in limited.output
    assert ops.cli("list", "--name", "nothing").output == "No tasks.\n"
    assert ops.cli("list", "--limit", "0").exit_code == 2
    bad_state = ops.cli("list", "--state", "stuck")
    assert bad_state.exit_code == 2 and "'stuck' is not one of" in bad_state.output


def test_list_queue_filter(ops: Ops) -> None:
    mail = ops.queue.perform("t.mail", 1)
    ops.queue.perform("t.ok", 1)
    result = ops.cli("list", "--queue", "emails")
    assert result.exit_code == 0, result.output
    assert _ids(result) == [mail]
    assert result.output.splitlines()[1].split()[1:4] == ["t.mail", "pending", "emails"]
    assert ops.cli("list", "--queue", "nothing").output == "No tasks.\n"
    assert len(_ids(ops.cli("list", "--queue", "default"))) == 1


def test_list_json(ops: Ops) -> None:
    dead = ops.fail_dead({"x": [1, 2]})
    mail = ops.queue.perform("t.mail", {"to": "a@example.com"}, delay=60)
    result = ops.cli("list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == {dead, mail}
    assert by_id[dead]["state"] == "dead"
    assert by_id[dead]["data"] == {"x": [1, 2]}
    assert by_id[dead]["name"] == "t.fail"
    assert "ValueError: bad input" in by_id[dead]["error"]
    assert by_id[mail] == {**ops.info(mail).as_dict(), "data": {"to": "a@example.com"}}
    assert by_id[mail]["queue"] == "emails" and by_id[mail]["priority"] == 2
    created = datetime.datetime.fromisoformat(by_id[mail]["created"])
    assert created.tzinfo is not None
    failed = json.loads(ops.cli("list", "--json", "--failed").output)
    assert [row["id"] for row in failed] == [dead]
    assert ops.cli("list", "--json", "--name", "nothing").output == "[]\n"


def test_show_command(ops: Ops) -> None:
    task_id = ops.fail_dead({"email": "a@example.com", "n": [1, 2]})
    result = ops.cli("show", str(task_id))
    assert result.exit_code == 0, result.output
    assert re.search(rf"^id\s+{task_id}$", result.output, re.M)
    assert re.search(r"^state\s+dead$", result.output, re.M)
    assert re.search(r"^queue\s+default$", result.output, re.M)
    # The data is pretty-printed: indented, one key per line.
    assert re.search(r'^  "email": "a@example.com",?$', result.output, re.M)
    assert "Traceback (most recent call last):" in result.output
    assert 'raise ValueError(f"bad input {data!r}\\nsecond line")' in result.output
    assert "second line" in result.output

    missing = ops.cli("show", "424242")
    assert missing.exit_code == 1
    assert "Error: No task 424242." in missing.stderr
    for bad in ("abc", "0", "-3", str(2**63)):
        result = ops.cli("show", "--", bad)
        assert result.exit_code == 2, bad
        assert f"{bad!r} is not a task id" in result.output


def test_show_json(ops: Ops) -> None:
    task_id = ops.fail_dead({"email": "a@example.com"})
    result = ops.cli("show", "--json", str(task_id))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data == {**ops.info(task_id).as_dict(), "data": {"email": "a@example.com"}}
    assert data["id"] == task_id and data["state"] == "dead"
    assert data["queue"] == "default" and data["failed_nr"] == 1
    assert "Traceback (most recent call last):" in data["error"]
    assert data["failed_last"] is not None and data["lease_owner"] is None
    missing = ops.cli("show", "--json", "424242")
    assert missing.exit_code == 1 and "Error: No task 424242." in missing.stderr


def test_retry_command_ids(ops: Ops) -> None:
    dead = ops.fail_dead()
    result = ops.cli("retry", str(dead))
    assert result.exit_code == 0, result.output
    assert result.output == f"Retried task {dead} (t.fail).\n"
    assert ops.row(dead).status == "queued"

    running = ops.queue.perform("t.ok", 1)
    ops.claim("t.ok")
    result = ops.cli("retry", str(running), "99999")
    assert result.exit_code == 1
    assert f"Error: Task {running} (t.ok) is running; not retried." in result.stderr
    assert "Error: No task 99999." in result.stderr
    bad = ops.cli("retry", "1", "x")
    assert bad.exit_code == 2 and "'x' is not a task id" in bad.output


def test_retry_command_unique_conflict_is_reported(ops: Ops) -> None:
    dead = ops.queue.perform("t.fail", 1, unique_key="k")
    ops.queue.drain()
    ops.queue.perform("t.fail", 2, unique_key="k", delay=3600)
    result = ops.cli("retry", str(dead))
    assert result.exit_code == 1
    assert f"Error: Task {dead} not retried:" in result.stderr
    assert "another task with that key is waiting" in result.stderr
    assert "Traceback" not in result.output


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
    assert ops.cli("retry", "--all-failed", "--name", "t.x").output == (
        "No dead tasks of t.x to retry.\n"
    )


def test_delete_command(ops: Ops) -> None:
    b = ops.fail_dead()
    a = ops.queue.perform("t.ok", 1, delay=60)
    running = ops.queue.perform("t.ok", 2)
    result = ops.cli("delete", str(a), str(b))
    assert result.exit_code == 0, result.output
    assert result.output == f"Deleted task {a} (t.ok).\nDeleted task {b} (t.fail).\n"
    assert ops.row(a) is None and ops.row(b) is None

    ops.claim("t.ok")
    result = ops.cli("delete", str(running), str(a))
    assert result.exit_code == 1
    assert f"Error: Task {running} (t.ok) is running; not deleted." in result.stderr
    assert f"Error: No task {a}." in result.stderr
    assert ops.row(running) is not None
    assert ops.cli("delete").exit_code == 2
    assert ops.cli("delete", "nope").exit_code == 2


def test_purge_command(ops: Ops) -> None:
    old = ops.fail_dead(1)
    new = ops.fail_dead(2)
    long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=8)
    ops.set_row(old, failed_last=long_ago)
    assert ops.cli("purge").exit_code == 2
    assert ops.cli("purge", "--failed", "--older-than", "soon").exit_code == 2
    too_long = ops.cli("purge", "--failed", "--older-than", "40000d")
    assert too_long.exit_code == 2 and "longer than 100 years" in too_long.output

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
    assert ops.cli("purge", "--failed", "--name", "t.other", "-y").output == (
        "No dead tasks of t.other.\n"
    )
    assert ops.cli("purge", "--failed", "--older-than", "0s", "--yes").output == (
        "Deleted 1 dead task that failed over 0s ago.\n"
    )
    ops.fail_dead(3)
    assert ops.cli("purge", "--failed", "-y").output == "Deleted 1 dead task.\n"
    final = ops.cli("status")
    assert final.exit_code == 0 and "The queue is empty." in final.output


def test_plainqueue_error_becomes_a_click_error(
    ops: Ops, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise PlainQueueError("something to fix")

    monkeypatch.setattr(ops.queue, "status", broken)
    result = ops.cli("status")
    assert result.exit_code == 1
    assert "Error: something to fix" in result.stderr
    assert "Traceback" not in result.output


def test_a_missing_table_says_how_to_create_it(ops: Ops) -> None:
    ops.queue.Task.__table__.drop(ops.env.db.engine)
    for args in (("status",), ("list",), ("show", "1"), ("purge", "--failed", "-y")):
        result = ops.cli(*args)
        assert result.exit_code == 1, args
        assert "Error: the queue's table does not exist" in result.stderr, args
        assert "db.create_all()" in result.stderr
        assert "Traceback" not in result.output


def test_colour_only_when_asked(ops: Ops) -> None:
    ops.fail_dead()
    plain = ops.cli("list")
    coloured = ops.cli("list", color=True)
    assert "\x1b[" not in plain.output
    assert "\x1b[31mdead" in coloured.output


def test_work_refuses_an_unknown_queue(
    ops: Ops, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ``work`` sets the package logger's level: undo it after the test.
    package_logger = logging.getLogger("flask_plainqueue")
    monkeypatch.setattr(package_logger, "level", package_logger.level)
    monkeypatch.setattr(package_logger, "handlers", list(package_logger.handlers))
    result = ops.cli("work", "--burst", "--queue", "emails", "--queue", "nope")
    assert result.exit_code == 2
    assert "no task is declared on queue(s) nope" in result.output
    assert "known queues: default, emails." in result.output


# -- notifications -------------------------------------------------------------


@pytest.mark.postgresql
def test_retry_notifies_idle_workers_on_postgresql(
    postgresql_uri: str, tmp_path: Path
) -> None:
    from flask_plainqueue.pg_listen import Listener

    app, db, queue = create_test_app(postgresql_uri, tmp_path)

    @queue.task(name="t.fail", max_retries=0)
    def fail(data: t.Any) -> None:
        raise ValueError("no")

    received: queue_module.Queue[str | None] = queue_module.Queue()
    with app.app_context():
        db.create_all()
        task_id = queue.perform(fail, 1)
        queue.drain()
        listener = queue.store().watcher(received.put, "test")
        assert isinstance(listener, Listener)
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
