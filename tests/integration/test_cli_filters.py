"""``flask queue`` per queue and in bulk, on both databases: ``status --queue``
with its queue column and JSON shape, ``delete`` by filter, ``periodic`` with
:meth:`~flask_plainqueue.PlainQueue.periodic_tasks` under it, and the
missing-table error of every command (``work --burst`` included)."""

from __future__ import annotations

import datetime
import json
import logging
import typing as t
import zoneinfo
from collections.abc import Iterator

import pytest
from conftest import Env
from helpers import Ops
from helpers import OWNER

from flask_plainqueue import InvalidArgument
from flask_plainqueue import TaskState

UTC = datetime.timezone.utc


@pytest.fixture
def ops(env: Env) -> Iterator[Ops]:
    queue = env.queue

    @queue.task(name="t.ok")
    def ok(data: t.Any) -> None:
        pass

    @queue.task(name="t.fail", max_retries=0)
    def fail(data: t.Any) -> None:
        raise ValueError("no")

    @queue.task(name="t.mail", queue="emails")
    def mail(data: t.Any) -> None:
        pass

    @queue.periodic(name="p.every", every=datetime.timedelta(minutes=5), queue="emails")
    def every() -> None:
        pass

    @queue.periodic(name="p.cron", cron="30 3 * * *", tz="Europe/Paris")
    def nightly() -> None:
        pass

    with env.app.app_context():
        yield Ops(env, queue)


# -- status --queue ---------------------------------------------------------------


def test_status_has_a_queue_column_and_filter(ops: Ops) -> None:
    ops.queue.perform("t.mail", 1)
    ops.queue.perform("t.mail", 2, delay=600)
    ops.queue.perform("t.ok", 1)
    result = ops.cli("status")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["TASK", "QUEUE"]
    assert lines[1].split() == ["t.mail", "emails", "1", "1", "0", "0", "0"]
    assert lines[2].split() == ["t.ok", "default", "1", "0", "0", "0", "0"]
    assert lines[3].split() == ["(total)", "2", "1", "0", "0", "0"]

    emails = ops.cli("status", "--queue", "emails")
    assert emails.exit_code == 0, emails.output
    lines = emails.output.splitlines()
    assert lines[1].split() == ["t.mail", "emails", "1", "1", "0", "0", "0"]
    assert lines[2].split() == ["(total)", "1", "1", "0", "0", "0"]
    assert "t.ok" not in emails.output
    nothing = ops.cli("status", "--queue", "nothing")
    assert nothing.output.startswith("Queue 'nothing' has no tasks.\n")


def test_status_json_per_queue(ops: Ops) -> None:
    mail = ops.queue.perform("t.mail", 1)
    ops.queue.perform("t.ok", 1)
    ops.claim("t.ok")
    data = json.loads(ops.cli("status", "--json").output)
    zero = {"pending": 0, "scheduled": 0, "running": 0, "succeeded": 0, "dead": 0}
    assert data["queue"] is None
    assert data["queues"] == {
        "default": {"t.ok": {**zero, "running": 1}},
        "emails": {"t.mail": {**zero, "pending": 1}},
    }
    assert data["workers"] == {OWNER: 1}
    emails = json.loads(ops.cli("status", "--json", "--queue", "emails").output)
    assert emails["queue"] == "emails"
    assert set(emails["tasks"]) == {"t.mail"}
    assert emails["total"] == {**zero, "pending": 1}
    assert emails["workers"] == {}  # the running task is on "default"
    assert emails["oldest_pending_id"] == mail
    direct = ops.queue.status(queue="emails").as_dict()
    assert {**direct, "oldest_pending_age": None} == {
        **emails,
        "oldest_pending_age": None,
    }
    assert sorted(data) == [
        "oldest_pending_age",
        "oldest_pending_id",
        "paused",
        "queue",
        "queues",
        "tasks",
        "total",
        "workers",
    ]


def test_list_has_a_queue_column_and_filter(ops: Ops) -> None:
    mail = ops.queue.perform("t.mail", 1)
    ops.queue.perform("t.ok", 1)
    result = ops.cli("list", "--queue", "emails")
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()
    assert header.split()[3] == "QUEUE"
    assert row.split()[:4] == [str(mail), "t.mail", "pending", "emails"]
    rows = json.loads(ops.cli("list", "--queue", "emails", "--json").output)
    assert [(r["id"], r["queue"]) for r in rows] == [(mail, "emails")]


# -- delete by filter ---------------------------------------------------------------


def test_delete_by_filter_asks_then_deletes_only_matching_waiting_tasks(
    ops: Ops,
) -> None:
    dead = ops.queue.perform("t.fail", 1)
    ops.queue.drain()
    mails = ops.queue.perform_many("t.mail", [1, 2, 3])
    later = ops.queue.perform("t.mail", 4, delay=600)
    ok = ops.queue.perform("t.ok", 1)
    assert ops.queue.get(dead) is not None  # dead, kept

    declined = ops.cli("delete", "--queue", "emails", input="n\n")
    assert declined.exit_code == 1
    assert "Delete 4 waiting tasks on queue emails? [y/N]" in declined.output
    assert {*mails, later} <= ops.ids()

    done = ops.cli("delete", "--queue", "emails", "--state", "pending", "--yes")
    assert done.exit_code == 0, done.output
    assert done.output == "Deleted 3 pending tasks on queue emails.\n"
    assert not set(mails) & ops.ids()
    assert {later, ok, dead} <= ops.ids()

    again = ops.cli("delete", "--queue", "emails", "--state", "pending", "-y")
    assert again.output == "No pending tasks on queue emails.\n"
    named = ops.cli("delete", "--name", "t.mail", "-y")
    assert named.output == "Deleted 1 waiting task of t.mail.\n"
    assert later not in ops.ids() and {ok, dead} <= ops.ids()

    # Waiting is the default: the dead task stays until asked for.
    assert ops.cli("delete", "--name", "t.fail", "-y").output == (
        "No waiting tasks of t.fail.\n"
    )
    both = ops.cli("delete", "--state", "dead", "--state", "pending", "-y")
    assert both.output == "Deleted 2 pending/dead tasks.\n"
    assert ops.ids() == set()


def test_delete_by_filter_never_deletes_a_running_task(ops: Ops) -> None:
    ops.queue.perform_many("t.ok", [1, 2])
    (running, _) = ops.claim("t.ok")[:2]
    waiting = ops.queue.perform("t.ok", 3)
    # What a stale "pending" read would have matched: a running one is left.
    assert ops.queue.delete_tasks(name="t.ok") == 1
    assert ops.ids() == {running, _} and waiting not in ops.ids()
    assert ops.queue.delete_tasks(state=TaskState.PENDING, dry_run=True) == 0
    with pytest.raises(InvalidArgument, match="may not include 'running'"):
        ops.queue.delete_tasks(state=TaskState.RUNNING)
    refused = ops.cli("delete", "--state", "running", "-y")
    assert refused.exit_code == 2 and "'running' is not one of" in refused.output


def test_delete_works_in_batches(ops: Ops) -> None:
    ops.queue.perform_many("t.mail", range(2345), delay=600)
    assert ops.queue.delete_tasks(queue="emails", dry_run=True) == 2345
    assert ops.queue.delete_tasks(queue="emails") == 2345
    assert ops.ids() == set()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "Give task IDs to delete, or filters"),
        (("1", "--name", "t.ok"), "not both"),
    ],
)
def test_delete_usage_errors(ops: Ops, args: tuple[str, ...], needle: str) -> None:
    result = ops.cli("delete", *args)
    assert result.exit_code == 2 and needle in result.output


def test_delete_by_id_still_works(ops: Ops) -> None:
    task_id = ops.queue.perform("t.ok", 1, delay=60)
    result = ops.cli("delete", str(task_id))
    assert result.output == f"Deleted task {task_id} (t.ok).\n"


# -- periodic -----------------------------------------------------------------------


def test_periodic_tasks_show_schedule_last_and_next_tick(ops: Ops) -> None:
    before = ops.queue.periodic_tasks()
    assert [p.name for p in before] == ["p.cron", "p.every"]
    assert all(p.last_tick is None for p in before)

    worker = ops.queue.worker(ops.env.app)
    now = ops.queue.store().clock()
    worker.scheduler.tick(now)
    cron, every = ops.queue.periodic_tasks()

    assert every.schedule == "every 5m" and every.every == 300.0
    assert every.queue == "emails" and every.cron is None and every.catch_up
    assert every.last_tick == worker.scheduler._ticks["p.every"]
    assert every.last_tick is not None and every.last_tick <= now
    assert every.last_tick.timestamp() % 300 == 0
    assert every.next_tick is not None and every.next_tick.tzinfo is not None
    assert every.next_tick.timestamp() % 300 == 0
    assert (
        datetime.timedelta(0) < every.next_tick - now <= datetime.timedelta(minutes=5)
    )

    assert cron.schedule == "30 3 * * *" and cron.tz == "Europe/Paris"
    assert cron.every is None and cron.queue == "default"
    assert cron.last_tick is not None and cron.next_tick is not None
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    for tick in (cron.last_tick, cron.next_tick):
        local = tick.astimezone(paris)
        assert (local.hour, local.minute, local.second) == (3, 30, 0)
    assert cron.last_tick <= now < cron.next_tick
    assert cron.next_tick - now <= datetime.timedelta(hours=25)


def test_periodic_command(ops: Ops) -> None:
    worker = ops.queue.worker(ops.env.app)
    worker.scheduler.tick(ops.queue.store().clock())
    result = ops.cli("periodic")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "NAME",
        "QUEUE",
        "SCHEDULE",
        "LAST",
        "TICK",
        "NEXT",
        "TICK",
    ]
    infos = {p.name: p for p in ops.queue.periodic_tasks()}
    for line, name in zip(lines[1:], ["p.cron", "p.every"], strict=True):
        info = infos[name]
        assert line.startswith(f"{name}  ")
        assert info.schedule in line
        for tick in (info.last_tick, info.next_tick):
            assert tick is not None
            assert tick.strftime("%Y-%m-%d %H:%M:%S") in line
    assert "(Europe/Paris)" in lines[1]

    data = json.loads(ops.cli("periodic", "--json").output)
    assert data == [p.as_dict() for p in ops.queue.periodic_tasks()]
    assert sorted(data[0]) == [
        "catch_up",
        "cron",
        "every",
        "last_tick",
        "name",
        "next_tick",
        "paused",
        "queue",
        "schedule",
        "tz",
    ]
    next_tick = datetime.datetime.fromisoformat(data[1]["next_tick"])
    assert next_tick.utcoffset() == datetime.timedelta(0)


def test_periodic_before_any_tick(ops: Ops) -> None:
    result = ops.cli("periodic")
    assert result.exit_code == 0, result.output
    header, *lines = result.output.splitlines()
    start = header.index("LAST TICK")
    assert [line[start:].split()[0] for line in lines] == ["never", "never"]
    assert json.loads(ops.cli("periodic", "--json").output)[0]["last_tick"] is None


def test_periodic_with_none_registered(env: Env) -> None:
    with env.app.app_context():
        result = env.app.test_cli_runner().invoke(args=["queue", "periodic"])
        assert result.output == "No periodic tasks are registered.\n"
        listed = env.app.test_cli_runner().invoke(args=["queue", "periodic", "--json"])
        assert listed.output == "[]\n"


# -- a missing table ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("status", "--json"),
        ("list",),
        ("list", "--json"),
        ("show", "1"),
        ("show", "--json", "1"),
        ("retry", "1"),
        ("retry", "--all-failed", "-y"),
        ("delete", "1"),
        ("delete", "--name", "t.ok", "-y"),
        ("purge", "--failed", "-y"),
        ("periodic",),
        ("periodic", "--json"),
        ("export",),
        ("import",),
        ("work", "--burst"),
    ],
)
def test_every_command_says_how_to_create_a_missing_table(
    ops: Ops, args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    # ``work`` sets the package logger's level: undo it after the test.
    package_logger = logging.getLogger("flask_plainqueue")
    monkeypatch.setattr(package_logger, "level", package_logger.level)
    monkeypatch.setattr(package_logger, "handlers", list(package_logger.handlers))
    ops.env.db.drop_all()
    # One task to import (an empty import writes nothing, so it cannot fail).
    record = {
        "name": "t.ok",
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
    result = ops.cli(*args, input=json.dumps(record) + "\n")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "the queue's table does not exist" in errors[0]
    assert "'db.create_all()'" in errors[0] and "'flask db upgrade'" in errors[0]
