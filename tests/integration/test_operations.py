"""Workers you can see, a health check, ``why``, and pause/resume, on SQLite
and PostgreSQL, through the public API and ``flask queue``."""

from __future__ import annotations

import datetime
import json
import threading
import typing as t
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from conftest import Env
from helpers import wait_for

from flask_plainqueue import ConfigurationError
from flask_plainqueue import InvalidArgument
from flask_plainqueue.claims import ClaimRequest
from flask_plainqueue.info import REASON_CODES
from flask_plainqueue.roster import Roster
from flask_plainqueue.roster import WorkerRow
from flask_plainqueue.worker import Worker

UTC = datetime.timezone.utc
pytestmark = pytest.mark.usefixtures("app_ctx")


class Running(t.NamedTuple):
    worker: Worker
    thread: threading.Thread


@pytest.fixture
def start(env: Env) -> Iterator[t.Callable[..., Running]]:
    """Start real workers on threads; stop them at the end."""
    started: list[Running] = []

    def start(**kwargs: t.Any) -> Running:
        worker = env.queue.worker(env.app, **kwargs)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        running = Running(worker, thread)
        started.append(running)
        return running

    yield start
    for running in started:
        running.worker.stop(0)
        running.thread.join(30)


def _ghost(env: Env, worker_id: str, heartbeat_age: float, **kw: t.Any) -> None:
    """Register a worker that is not running, last heard of ``heartbeat_age``
    seconds ago."""
    store = env.queue.store()
    now = store.clock()
    beat = now - datetime.timedelta(seconds=heartbeat_age)
    values: dict[str, t.Any] = {
        "id": worker_id,
        "host": "elsewhere",
        "pid": 4242,
        "kind": "process",
        "queues": None,
        "tasks": (),
        "concurrency": 1,
        "version": "0.0",
        "state": "running",
        "started": beat,
        "heartbeat": beat,
    }
    values.update(kw)
    Roster(store).register(WorkerRow(**values))


def _claim_as(env: Env, owner: str, lease: float = 600.0) -> list[int]:
    store = env.queue.store()
    now = store.clock()
    tasks = store.claim(
        ClaimRequest(
            owner=owner,
            names=tuple(env.queue.registry.names()),
            batch_sizes={n: 1 for n in env.queue.registry.names()},
            now=now,
            until=now + datetime.timedelta(seconds=lease),
            queues=None,
        ),
        None,
    )
    return [task.id for task in tasks]


# -- the workers table --------------------------------------------------------


def test_a_running_worker_is_listed_until_it_exits(
    env: Env, start: t.Callable[..., Running]
) -> None:
    release = threading.Event()
    begun = threading.Event()

    @env.queue.task(queue="mail")
    def slow(data: t.Any) -> None:
        begun.set()
        release.wait(30)

    task_id = env.queue.perform(slow)
    running = start(queues=["mail"], concurrency=2)
    assert begun.wait(30)
    (info,) = env.queue.workers()
    assert info.id == running.worker.id
    assert (info.kind, info.state, info.queues, info.concurrency) == (
        "process",
        "running",
        ("mail",),
        2,
    )
    assert "tests.integration.test_operations" not in info.tasks  # names, not modules
    assert any(name.endswith("slow") for name in info.tasks)
    assert info.running == (task_id,)
    assert info.alive and info.heartbeat_age < 30
    assert json.loads(json.dumps(info.as_dict()))["running"] == [task_id]

    running.worker.stop(30)
    wait_for(
        lambda: [w.state for w in env.queue.workers()] in (["stopping"], []),
        timeout=30,
        message="the worker to say it is stopping",
    )
    release.set()
    running.thread.join(30)
    assert env.queue.workers() == []


def test_heartbeats_move_forward(env: Env, start: t.Callable[..., Running]) -> None:
    running = start()
    wait_for(lambda: env.queue.workers(), timeout=30, message="registration")
    first = env.queue.workers()[0].heartbeat
    running.worker.presence.beat()
    assert env.queue.workers()[0].heartbeat > first


def test_heartbeat_settings_are_checked(tmp_path: t.Any, sqlite_uri: str) -> None:
    with pytest.raises(ConfigurationError, match="PLAINQUEUE_WORKER_TIMEOUT"):
        create_test_app(
            sqlite_uri,
            tmp_path,
            PLAINQUEUE_HEARTBEAT=10,
            PLAINQUEUE_WORKER_TIMEOUT=5,
        )
    with pytest.raises(ConfigurationError, match="PLAINQUEUE_HEARTBEAT"):
        create_test_app(sqlite_uri, tmp_path, PLAINQUEUE_HEARTBEAT=0)


def test_a_lost_workers_tasks_are_due_at_once(env: Env) -> None:
    ran: list[int] = []

    @env.queue.task
    def job(data: int) -> None:
        ran.append(data)

    env.queue.perform(job, 1)
    _ghost(env, "ghost:1:a", heartbeat_age=3600)
    (held,) = _claim_as(env, "ghost:1:a", lease=3600)
    assert env.queue.drain() == 0  # its lease has an hour to run
    assert [w.state for w in env.queue.workers()] == ["lost"]
    assert env.queue.why(held).code == "leased-by-lost-worker"

    finder = env.queue.worker(env.app)
    assert finder.presence.free_lost(env.queue.store().clock()) == 1
    assert env.queue.drain() == 1
    assert ran == [1]


def test_a_slow_heartbeat_is_not_lost(env: Env) -> None:
    @env.queue.task
    def job(data: t.Any) -> None:
        pass

    env.queue.perform(job)
    _ghost(env, "alive:1:a", heartbeat_age=1)
    _claim_as(env, "alive:1:a")
    finder = env.queue.worker(env.app)
    assert finder.presence.free_lost(env.queue.store().clock()) == 0
    assert env.queue.drain() == 0
    assert [w.state for w in env.queue.workers()] == ["running"]


def test_a_resumed_lost_worker_cannot_settle_what_was_freed(env: Env) -> None:
    @env.queue.task
    def job(data: t.Any) -> None:
        pass

    env.queue.perform(job)
    _ghost(env, "paused:1:a", heartbeat_age=3600)
    (held,) = _claim_as(env, "paused:1:a")
    store = env.queue.store()
    env.queue.worker(env.app).presence.free_lost(store.clock())
    # The worker wakes up and tries to extend its lease: the row is not its own.
    until = store.clock() + datetime.timedelta(seconds=60)
    assert store.extend("paused:1:a", [held], until) == 0
    assert env.queue.get(held) is not None
    assert env.queue.get(held).lease_owner is None  # type: ignore[union-attr]


def test_lost_workers_are_pruned_after_an_hour(env: Env) -> None:
    _ghost(env, "old:1:a", heartbeat_age=2 * 3600)
    _ghost(env, "recent:1:a", heartbeat_age=120)
    env.queue.worker(env.app).presence.free_lost(env.queue.store().clock())
    assert [w.id for w in env.queue.workers()] == ["recent:1:a"]


# -- health ---------------------------------------------------------------------


def test_health(env: Env, start: t.Callable[..., Running]) -> None:
    @env.queue.task(queue="mail")
    def job(data: t.Any) -> None:
        pass

    @env.queue.task(queue="reports")
    def report(data: t.Any) -> None:
        pass

    health = env.queue.health()
    assert not health.ok and health.problems == ("no live worker",)
    start(queues=["mail"])
    wait_for(lambda: env.queue.health().ok, timeout=30, message="a live worker")
    assert env.queue.health(queues=["mail"]).ok
    other = env.queue.health(queues=["mail", "reports"])
    assert not other.ok
    assert other.problems == ("no live worker serves queue 'reports'",)
    assert other.queues == {"mail": 1, "reports": 0}

    # A due task nobody runs: the worker serves "mail" only.
    old = env.queue.perform(report)
    store = env.queue.store()
    with store.write() as conn:
        conn.execute(
            sa.update(store.table)
            .where(store.table.c.id == old)
            .values(run_at=store.clock() - datetime.timedelta(seconds=600))
        )
    assert env.queue.health().ok  # no --max-age: the age is not checked
    late = env.queue.health(max_age=60)
    assert not late.ok and late.oldest_due_id == old
    assert late.problems[0].startswith(f"task {old} has waited 6")
    # Paused work does not make the queue unhealthy.
    env.queue.pause(queue="reports")
    assert env.queue.health(max_age=60).ok
    with pytest.raises(InvalidArgument, match="max_age"):
        env.queue.health(max_age=-1)


# -- why ------------------------------------------------------------------------


def test_why_gives_each_reason(env: Env) -> None:
    @env.queue.task(queue="mail", retry_interval=600, max_retries=1)
    def job(data: t.Any) -> None:
        raise ValueError("boom")

    @env.queue.task(queue="mail", priority=5)
    def urgent(data: t.Any) -> None:
        pass

    @env.queue.task(queue="other", keep_succeeded=60)
    def kept(data: t.Any) -> None:
        pass

    seen: set[str] = set()

    def why(task_id: int, code: str) -> None:
        reason = env.queue.why(task_id)
        assert reason.code == code, str(reason)
        assert reason.message
        json.dumps(reason.as_dict())
        seen.add(code)

    why(987654, "not-found")
    done = env.queue.perform(kept)
    assert env.queue.drain() == 1
    why(done, "succeeded")
    later = env.queue.perform(job, delay=3600)
    why(later, "scheduled")

    failing = env.queue.perform(job)
    assert env.queue.drain() == 1
    why(failing, "backing-off")
    assert "boom" in env.queue.why(failing).message
    store = env.queue.store()
    with store.write() as conn:
        conn.execute(
            sa.update(store.table)
            .where(store.table.c.id == failing)
            .values(run_at=store.clock())
        )
    assert env.queue.drain() == 1
    why(failing, "dead")

    due = env.queue.perform(job)
    why(due, "no-worker")  # nobody registered
    _ghost(env, "other:1:a", heartbeat_age=0, queues=("reports",))
    why(due, "no-worker")  # a live worker, not serving "mail"
    _ghost(env, "mailer:1:a", heartbeat_age=0, tasks=("something.else",))
    why(due, "unknown-task")
    _ghost(env, "mailer:1:a", heartbeat_age=0, tasks=tuple(env.queue.registry.names()))
    why(due, "pending")
    first = env.queue.perform(urgent)
    why(due, "waiting-behind")
    assert env.queue.why(due).details["ahead"] == 1
    why(first, "pending")

    env.queue.pause(task=job.name)
    why(due, "task-paused")
    env.queue.pause(queue="mail")
    why(due, "queue-paused")
    env.queue.resume(queue="mail", task=job.name)

    (held,) = _claim_as(env, "mailer:1:a")
    assert held == first
    why(held, "running")
    _ghost(env, "mailer:1:a", heartbeat_age=3600)
    why(held, "leased-by-lost-worker")
    assert seen == set(REASON_CODES)


# -- pause and resume -----------------------------------------------------------


def test_paused_tasks_and_queues_are_not_claimed(env: Env) -> None:
    ran: list[str] = []

    @env.queue.task(queue="mail")
    def mail(data: t.Any) -> None:
        ran.append("mail")

    @env.queue.task(queue="reports")
    def report(data: t.Any) -> None:
        ran.append("report")

    assert env.queue.pause(task=mail.name) is True
    assert env.queue.pause(task=mail.name) is False
    env.queue.perform(mail)
    env.queue.perform(report)
    assert env.queue.drain() == 1
    assert ran == ["report"]
    paused = env.queue.paused()
    assert paused.tasks == {mail.name} and not paused.queues

    env.queue.resume(task=mail.name)
    env.queue.pause(queue="mail")
    env.queue.perform(report)
    assert env.queue.drain() == 1
    assert ran == ["report", "report"]
    assert env.queue.resume(queue="mail") is True
    assert env.queue.resume(queue="mail") is False
    assert env.queue.drain() == 1
    assert ran == ["report", "report", "mail"]


def test_a_running_worker_obeys_a_pause(
    env: Env, start: t.Callable[..., Running]
) -> None:
    ran = threading.Event()

    @env.queue.task
    def job(data: t.Any) -> None:
        ran.set()

    env.queue.pause(task=job.name)
    running = start()
    wait_for(lambda: env.queue.workers(), timeout=30, message="registration")
    task_id = env.queue.perform(job)
    # Woken by the enqueue, it claims and finds nothing it may run.
    assert not ran.wait(1.5)
    assert env.queue.why(task_id).code == "task-paused"
    assert running.worker.presence.paused.tasks == {job.name}
    env.queue.resume(task=job.name)
    assert ran.wait(30)


def test_pause_needs_a_target(env: Env) -> None:
    with pytest.raises(InvalidArgument, match="queue=..., task=..."):
        env.queue.pause()
    with pytest.raises(InvalidArgument, match="queue"):
        env.queue.pause(queue="")
    with pytest.raises(InvalidArgument, match="task"):
        env.queue.resume(task="x" * 300)


def test_ticks_of_a_paused_periodic_task_wait(env: Env) -> None:
    @env.queue.periodic(every=datetime.timedelta(seconds=60), catch_up=True)
    def tick() -> None:
        pass

    worker = env.queue.worker(env.app)
    scheduler = worker.scheduler
    start = datetime.datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    scheduler.tick(start)  # the first sight records the tick, runs nothing
    env.queue.pause(task=tick.name)
    worker.presence.refresh_pauses()
    scheduler.tick(start + datetime.timedelta(minutes=1))
    scheduler.tick(start + datetime.timedelta(minutes=2))
    assert env.queue.count() == 0
    env.queue.resume(task=tick.name)
    worker.presence.refresh_pauses()
    scheduler.tick(start + datetime.timedelta(minutes=3))
    # catch_up: the latest missed tick runs once.
    assert env.queue.count() == 1


# -- the CLI ---------------------------------------------------------------------


def test_cli_workers_health_why_pause(env: Env) -> None:
    runner = env.app.test_cli_runner()

    @env.queue.task
    def job(data: t.Any) -> None:
        pass

    result = runner.invoke(args=["queue", "workers"])
    assert result.exit_code == 0 and "No workers registered" in result.output
    result = runner.invoke(args=["queue", "health"])
    assert result.exit_code == 1
    assert "unhealthy: no live worker" in result.output

    _ghost(
        env,
        "web:1:a",
        heartbeat_age=0,
        tasks=(job.name,),
        kind="embedded",
        queues=("default",),
    )
    result = runner.invoke(args=["queue", "workers"])
    assert result.exit_code == 0, result.output
    assert "web:1:a" in result.output and "embedded" in result.output
    listed = json.loads(runner.invoke(args=["queue", "workers", "--json"]).output)
    assert [(w["id"], w["state"]) for w in listed] == [("web:1:a", "running")]
    result = runner.invoke(args=["queue", "health", "--queue", "default"])
    assert result.exit_code == 0 and result.output.startswith("ok: 1 live worker")
    result = runner.invoke(args=["queue", "health", "--queue", "nope"])
    assert result.exit_code == 1 and "queue 'nope'" in result.output

    task_id = env.queue.perform(job)
    result = runner.invoke(args=["queue", "why", str(task_id)])
    assert result.exit_code == 0 and result.output.startswith("pending: ")
    result = runner.invoke(args=["queue", "pause", "--task", job.name])
    assert result.exit_code == 0 and "paused" in result.output
    reason = json.loads(
        runner.invoke(args=["queue", "why", str(task_id), "--json"]).output
    )
    assert reason["code"] == "task-paused"
    result = runner.invoke(args=["queue", "resume", "--task", job.name])
    assert result.exit_code == 0 and "resumed" in result.output
    result = runner.invoke(args=["queue", "pause"])
    assert result.exit_code == 2 and "--queue, --task or both" in result.output
    result = runner.invoke(args=["queue", "why", "abc"])
    assert result.exit_code == 2 and "not a task id" in result.output
