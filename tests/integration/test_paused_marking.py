"""Paused work shows as paused where tasks are listed: ``TaskInfo.paused``,
``QueueStatus.paused``, ``PeriodicInfo.paused`` and ``flask queue status``,
``list``, ``show`` and ``periodic`` (text and JSON), on both databases."""

from __future__ import annotations

import datetime
import json
import typing as t
from collections.abc import Iterator

import pytest
from conftest import Env
from helpers import Ops

from flask_plainqueue import Paused
from flask_plainqueue import PlainQueue
from flask_plainqueue import TaskState
from flask_plainqueue.claims import ClaimRequest

pytestmark = pytest.mark.usefixtures("app_ctx")


@pytest.fixture
def ops(env: Env) -> Iterator[Ops]:
    @env.queue.task(name="t.mail", queue="mail")
    def mail(data: t.Any) -> None:
        pass

    @env.queue.task(name="t.ok")
    def ok(data: t.Any) -> None:
        pass

    @env.queue.task(name="t.fail", max_retries=0)
    def fail(data: t.Any) -> None:
        raise ValueError("no")

    @env.queue.periodic(name="t.hourly", every=datetime.timedelta(hours=1))
    def hourly() -> None:
        pass

    @env.queue.periodic(
        name="t.mailer", every=datetime.timedelta(hours=1), queue="mail"
    )
    def mailer() -> None:
        pass

    yield Ops(env, env.queue)


def _claim(queue: PlainQueue, name: str) -> list[int]:
    store = queue.store()
    now = store.clock()
    claimed = store.claim(
        ClaimRequest(
            owner="w-1",
            names=[name],
            batch_sizes={name: 1},
            now=now,
            until=now + datetime.timedelta(seconds=300),
        )
    )
    return [c.id for c in claimed]


def test_due_tasks_of_a_paused_name_or_queue_are_marked(ops: Ops) -> None:
    queue = ops.queue
    dead = queue.perform("t.fail", 1)
    queue.drain()
    running = queue.perform("t.ok", 1)
    assert _claim(queue, "t.ok") == [running]
    due = queue.perform("t.ok", 2)
    later = queue.perform("t.ok", 3, delay=3600)
    mail = queue.perform("t.mail", 1)

    def marked() -> dict[int, bool]:
        return {info.id: info.paused for info in queue.tasks(limit=100)}

    everything = {dead: False, running: False, due: False, later: False, mail: False}
    assert marked() == everything

    queue.pause(task="t.ok")
    # Only the due task waits because of the pause: the running one finishes,
    # the scheduled one is not due yet (why says "scheduled").
    assert marked() == {**everything, due: True}
    assert t.cast(t.Any, queue.get(due)).paused is True
    assert t.cast(t.Any, queue.get(later)).paused is False
    assert queue.tasks(state=TaskState.PENDING, name="t.ok")[0].paused is True
    assert queue.why(due).code == "task-paused"

    queue.pause(task="t.fail")
    assert t.cast(t.Any, queue.get(dead)).paused is False  # dead is dead

    queue.resume(task="t.ok")
    queue.pause(queue="mail")
    assert marked() == {**everything, mail: True}
    assert queue.why(mail).code == "queue-paused"
    queue.resume(queue="mail")
    assert marked() == everything


def test_status_carries_the_pauses(ops: Ops) -> None:
    queue = ops.queue
    queue.perform("t.mail", 1)
    queue.perform("t.ok", 1)
    assert queue.status().paused == Paused()
    assert queue.status().as_dict()["paused"] == {"queues": [], "tasks": []}
    result = ops.cli("status")
    assert "PAUSED" not in result.output and "Paused:" not in result.output

    queue.pause(queue="mail")
    queue.pause(task="t.ok")
    queue.pause(task="never.stored")
    status = queue.status()
    assert status.paused == Paused(
        queues=frozenset({"mail"}), tasks=frozenset({"t.ok", "never.stored"})
    )
    # Every pause, whatever queue the status is limited to.
    assert queue.status(queue="default").paused == status.paused

    data = json.loads(ops.cli("status", "--json").output)
    assert data["paused"] == {"queues": ["mail"], "tasks": ["never.stored", "t.ok"]}
    direct = queue.status().as_dict()
    assert {**data, "oldest_pending_age": 0} == {**direct, "oldest_pending_age": 0}

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
        "PAUSED",
    ]
    assert lines[1].split() == ["t.mail", "mail", "1", "0", "0", "0", "0", "queue"]
    assert lines[2].split() == ["t.ok", "default", "1", "0", "0", "0", "0", "task"]
    assert lines[3].split() == ["(total)", "2", "0", "0", "0", "0"]
    assert (
        "Paused: queue 'mail', task 'never.stored', task 't.ok'"
        " ('flask queue resume' resumes)"
    ) in result.output


def test_list_and_show_mark_paused_tasks(ops: Ops) -> None:
    queue = ops.queue
    held = queue.perform("t.ok", 1)
    free = queue.perform("t.mail", 1)
    queue.pause(task="t.ok")

    result = ops.cli("list")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert "pending (paused)" in rows[str(held)]
    assert "paused" not in rows[str(free)]

    listed = json.loads(ops.cli("list", "--json").output)
    assert {row["id"]: row["paused"] for row in listed} == {held: True, free: False}
    assert listed == [info.as_dict() for info in queue.tasks()]
    assert json.loads(ops.cli("show", str(held), "--json").output)["paused"] is True

    shown = ops.cli("show", str(held)).output
    assert "state        pending (paused)" in shown
    assert "(paused)" not in ops.cli("show", str(free)).output


def test_periodic_tasks_of_a_paused_name_or_queue_are_marked(ops: Ops) -> None:
    queue = ops.queue

    def paused() -> dict[str, bool]:
        return {info.name: info.paused for info in queue.periodic_tasks()}

    assert paused() == {"t.hourly": False, "t.mailer": False}
    assert "PAUSED" not in ops.cli("periodic").output

    queue.pause(task="t.hourly")
    assert paused() == {"t.hourly": True, "t.mailer": False}
    queue.pause(queue="mail")
    assert paused() == {"t.hourly": True, "t.mailer": True}
    queue.resume(task="t.hourly")
    assert paused() == {"t.hourly": False, "t.mailer": True}

    result = ops.cli("periodic")
    assert result.exit_code == 0, result.output
    header, *lines = result.output.splitlines()
    assert header.split()[-1] == "PAUSED"
    column = header.index("PAUSED")
    assert [line[column:].strip() for line in lines] == ["", "paused"]
    data = json.loads(ops.cli("periodic", "--json").output)
    assert [(p["name"], p["paused"]) for p in data] == [
        ("t.hourly", False),
        ("t.mailer", True),
    ]


def test_without_the_pauses_table_nothing_shows_as_paused(ops: Ops) -> None:
    """An app upgraded without its migration: listing works, nothing paused
    (its workers ignore pauses too)."""
    queue = ops.queue
    task_id = queue.perform("t.ok", 1)
    queue.pause(task="t.ok")
    assert t.cast(t.Any, queue.get(task_id)).paused is True
    store = queue.store()
    store.tables.pauses.drop(store.engine)
    assert t.cast(t.Any, queue.get(task_id)).paused is False
    assert [info.paused for info in queue.tasks()] == [False]
    assert queue.status().paused == Paused()
    assert [p.paused for p in queue.periodic_tasks()] == [False, False]
    result = ops.cli("list")
    assert result.exit_code == 0 and "(paused)" not in result.output
