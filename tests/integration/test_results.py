"""Results, states, ``current_task``, progress and ``wait``, through ``drain``
and the public read API, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime
import io
import json
import logging
import threading
import time
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from conftest import Env
from helpers import wait_for

from flask_plainqueue import current_task
from flask_plainqueue import InvalidArgument
from flask_plainqueue import TaskState
from flask_plainqueue.progress import PROGRESS_INTERVAL

UTC = datetime.timezone.utc
pytestmark = pytest.mark.usefixtures("app_ctx")


def _statuses(env: Env) -> list[str]:
    env.db.session.rollback()
    table = env.queue.Task.__table__
    return list(env.db.session.scalars(sa.select(table.c.status).order_by("id")))


# -- results and states -----------------------------------------------------------


def test_succeeded_task_is_kept_with_its_result(env: Env) -> None:
    @env.queue.task(name="report", keep_succeeded=3600)
    def report(data: t.Any) -> dict[str, str]:
        return {"url": f"/reports/{data['month']}"}

    task_id = env.queue.perform(report, {"month": "2026-11"})
    before = datetime.datetime.now(UTC)
    assert env.queue.drain() == 1
    info = env.queue.get(task_id)
    assert info is not None
    assert info.state is TaskState.SUCCEEDED
    assert info.result == {"url": "/reports/2026-11"}
    assert info.attempts == 1 and info.error is None and info.progress is None
    assert info.finished is not None
    assert before - datetime.timedelta(seconds=5) <= info.finished
    # Its expiry: finished + keep_succeeded.
    assert info.run_at - info.finished == datetime.timedelta(seconds=3600)
    assert info.as_dict()["result"] == {"url": "/reports/2026-11"}
    assert info.as_dict()["finished"] == info.finished.isoformat()
    assert _statuses(env) == ["succeeded"]
    # Kept rows are never claimed again.
    assert env.queue.drain() == 0


def test_keep_succeeded_zero_deletes_and_ignores_the_result(env: Env) -> None:
    @env.queue.task(name="plain")
    def plain() -> object:
        return object()  # not JSON: ignored, since nothing is kept

    task_id = env.queue.perform(plain)
    assert env.queue.drain() == 1
    assert env.queue.get(task_id) is None
    assert _statuses(env) == []


def test_config_sets_the_default_keep(database_uri: str, tmp_path: Path) -> None:
    app, db, queue = create_test_app(
        database_uri, tmp_path, PLAINQUEUE_KEEP_SUCCEEDED=datetime.timedelta(hours=1)
    )

    @queue.task(name="kept")
    def kept() -> int:
        return 7

    @queue.task(name="not_kept", keep_succeeded=0)
    def not_kept() -> int:
        return 8

    with app.app_context():
        db.drop_all()
        db.create_all()
        try:
            a, b = queue.perform(kept), queue.perform(not_kept)
            assert queue.drain() == 2
            info = queue.get(a)
            assert info is not None and info.result == 7
            assert queue.get(b) is None
        finally:
            db.drop_all()
            db.engine.dispose()


def test_non_json_result_is_stored_as_null_with_a_warning(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    class Thing:
        pass

    @env.queue.task(name="thing", keep_succeeded=60)
    def thing() -> Thing:
        return Thing()

    task_id = env.queue.perform(thing)
    with caplog.at_level(logging.WARNING, "flask_plainqueue.worker"):
        env.queue.drain()
    info = env.queue.get(task_id)
    assert info is not None and info.state is TaskState.SUCCEEDED
    assert info.result is None and info.result_json == "null"
    assert any("returned a Thing" in r.getMessage() for r in caplog.records)


def test_get_shows_each_state(env: Env) -> None:
    running: list[t.Any] = []

    @env.queue.task(name="ok", keep_succeeded=60)
    def ok() -> str:
        running.append(env.queue.get(current_task.id))
        return "done"

    @env.queue.task(name="bad", max_retries=0)
    def bad() -> None:
        raise ValueError("nope")

    scheduled = env.queue.perform(ok, delay=3600)
    pending = env.queue.perform(bad, delay=3600)
    info = env.queue.get(pending)
    assert info is not None and info.state is TaskState.SCHEDULED
    env.queue.retry(pending)  # due now, not run yet
    info = env.queue.get(pending)
    assert info is not None and info.state is TaskState.PENDING
    succeeded = env.queue.perform(ok)
    assert env.queue.drain() == 2
    assert [i.state for i in running] == [TaskState.RUNNING]
    states = {
        task_id: t.cast(t.Any, env.queue.get(task_id)).state
        for task_id in (scheduled, pending, succeeded)
    }
    assert states == {
        scheduled: TaskState.SCHEDULED,
        pending: TaskState.DEAD,
        succeeded: TaskState.SUCCEEDED,
    }
    assert env.queue.count(state=TaskState.SUCCEEDED) == 1
    assert [i.id for i in env.queue.tasks(state=TaskState.SUCCEEDED)] == [succeeded]
    assert env.queue.status().totals[TaskState.SUCCEEDED] == 1
    # A succeeded task is not retried (perform it again instead); it can be
    # deleted.
    assert env.queue.retry(succeeded) is False
    assert env.queue.delete(succeeded) is True
    assert env.queue.get(succeeded) is None
    again = env.queue.perform(ok)
    env.queue.drain()
    assert env.queue.delete_tasks(state=TaskState.SUCCEEDED) == 1
    assert env.queue.get(again) is None


def test_kept_tasks_are_pruned_after_their_keep(env: Env) -> None:
    @env.queue.task(name="brief", keep_succeeded=0.2)
    def brief() -> int:
        return 1

    @env.queue.task(name="long", keep_succeeded=3600)
    def long() -> int:
        return 2

    a = env.queue.perform(brief)
    b = env.queue.perform(long)
    env.queue.drain()
    assert _statuses(env) == ["succeeded", "succeeded"]
    pruned: list[int] = []

    def prune() -> bool:
        pruned.append(env.queue.prune())
        return sum(pruned) == 1

    wait_for(prune)
    assert env.queue.get(a) is None
    info = env.queue.get(b)
    assert info is not None and info.result == 2
    # The worker's housekeeping runs the same prune, in bounded batches.
    store = env.queue.store()
    later = datetime.datetime.now(UTC) + datetime.timedelta(hours=2)
    assert store.delete_expired(later, batch=1) == 1
    assert _statuses(env) == []


def test_eager_mode_keeps_results(database_uri: str, tmp_path: Path) -> None:
    app, db, queue = create_test_app(database_uri, tmp_path, PLAINQUEUE_EAGER=True)

    @queue.task(name="eager", keep_succeeded=60)
    def eager(data: int) -> int:
        current_task.report_progress("half")
        return data * 2

    with app.app_context():
        db.drop_all()
        db.create_all()
        try:
            task_id = queue.perform(eager, 21)
            info = queue.get(task_id)
            assert info is not None and info.state is TaskState.SUCCEEDED
            assert info.result == 42 and info.progress == "half"
        finally:
            db.drop_all()
            db.engine.dispose()


def test_atomic_task_keeps_its_result_and_progress(env: Env) -> None:
    called: list[int] = []

    @env.queue.task(
        name="atomic",
        atomic=True,
        keep_succeeded=60,
        success=lambda data: called.append(current_task.id),
    )
    def atomic() -> list[int]:
        current_task.report_progress(1)
        current_task.report_progress(2)
        return [1, 2]

    task_id = env.queue.perform(atomic)
    env.queue.drain()
    info = env.queue.get(task_id)
    assert info is not None and info.state is TaskState.SUCCEEDED
    assert info.result == [1, 2] and info.progress == 2
    assert called == [task_id]


# -- current_task ------------------------------------------------------------------


def test_current_task_in_the_body_and_callbacks(env: Env) -> None:
    seen: list[tuple[str, int, str, int, bool]] = []

    def note(where: str) -> None:
        seen.append(
            (
                where,
                current_task.id,
                current_task.name,
                current_task.attempt,
                current_task.will_retry,
            )
        )

    def failed(data: t.Any, exc: BaseException) -> None:
        note("failure")

    @env.queue.task(
        name="flaky",
        max_retries=1,
        retry_interval=0,
        failure=failed,
        success=lambda data: note("success"),
    )
    def flaky() -> None:
        note("body")
        raise ValueError("again")

    @env.queue.task(name="fine", success=lambda data: note("success"))
    def fine() -> None:
        note("body")

    a = env.queue.perform(flaky)
    env.queue.drain()
    assert seen == [
        ("body", a, "flaky", 1, False),
        ("failure", a, "flaky", 1, True),
        ("body", a, "flaky", 2, False),
        ("failure", a, "flaky", 2, False),
    ]
    seen.clear()
    b = env.queue.perform(fine)
    env.queue.drain()
    assert seen == [("body", b, "fine", 1, False), ("success", b, "fine", 1, False)]


def test_current_task_in_an_async_task(env: Env) -> None:
    seen: list[tuple[int, int]] = []

    @env.queue.task(name="coro", batch_size=2)
    async def coro() -> None:
        seen.append((current_task.id, current_task.attempt))

    ids = [env.queue.perform(coro) for _ in range(3)]
    env.queue.drain()
    assert sorted(seen) == [(i, 1) for i in ids]


def test_current_task_outside_a_task_raises() -> None:
    with pytest.raises(RuntimeError, match="only available while a worker runs"):
        current_task.id  # noqa: B018
    with pytest.raises(RuntimeError, match="only available"):
        current_task.report_progress(1)
    assert "no task running" in repr(current_task)


# -- progress ----------------------------------------------------------------------


def test_progress_is_written_at_once_then_coalesced(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = env.queue.store()
    writes: list[str] = []
    original = store.write_progress

    def counting(owner: str, task: t.Any, progress: str) -> bool:
        writes.append(progress)
        return original(owner, task, progress)

    monkeypatch.setattr(store, "write_progress", counting)
    observed: dict[str, t.Any] = {}

    @env.queue.task(name="loop", keep_succeeded=60)
    def loop() -> None:
        # The first value is written at once, in a transaction of its own.
        current_task.report_progress({"done": 0})
        observed["first"] = env.queue.get(current_task.id)
        start = time.monotonic()
        count = 0
        while time.monotonic() - start < 1.0:
            count += 1
            current_task.report_progress({"done": count})
        observed["calls"] = count
        observed["elapsed"] = time.monotonic() - start
        # A value held back is written by the timer even if nothing follows.
        current_task.report_progress("held")
        wait_for(
            lambda: t.cast(t.Any, env.queue.get(current_task.id)).progress == "held"
        )
        current_task.report_progress("last")

    task_id = env.queue.perform(loop)
    env.queue.drain()
    first = observed["first"]
    assert first is not None and first.progress == {"done": 0}
    assert observed["calls"] > 100
    # One write at once, then at most one per PROGRESS_INTERVAL (and "held").
    allowed = 2 + observed["elapsed"] / PROGRESS_INTERVAL + 1
    assert len(writes) <= allowed, (len(writes), allowed)
    info = env.queue.get(task_id)
    # The last value is written with the outcome.
    assert info is not None and info.progress == "last"


def test_last_progress_is_written_before_a_failure(env: Env) -> None:
    @env.queue.task(name="fails", max_retries=0)
    def fails() -> None:
        current_task.report_progress(1)
        current_task.report_progress(2)  # held: within the interval
        raise RuntimeError("boom")

    task_id = env.queue.perform(fails)
    env.queue.drain()
    info = env.queue.get(task_id)
    assert info is not None and info.state is TaskState.DEAD
    assert info.progress == 2


def test_report_progress_refuses_non_json(env: Env) -> None:
    errors: list[str] = []

    @env.queue.task(name="odd")
    def odd() -> None:
        try:
            current_task.report_progress({1, 2})
        except InvalidArgument as exc:
            errors.append(str(exc))

    env.queue.perform(odd)
    env.queue.drain()
    assert len(errors) == 1 and "report_progress() takes a JSON value" in errors[0]
    assert "set" in errors[0]


def test_progress_of_a_task_no_longer_held_is_not_written(env: Env) -> None:
    @env.queue.task(name="held")
    def held() -> None:
        pass

    task_id = env.queue.perform(held, delay=3600)
    store = env.queue.store()
    now = datetime.datetime.now(UTC)
    claimed = store.claim_id(owner="me", task_id=task_id, until=now)
    assert claimed is not None
    assert store.write_progress("someone-else", claimed, "1") is False
    assert store.write_progress("me", claimed, "2") is True
    info = env.queue.get(task_id)
    assert info is not None and info.progress == 2


# -- wait --------------------------------------------------------------------------


def test_wait_returns_when_succeeded_or_dead(env: Env) -> None:
    @env.queue.task(name="answer", keep_succeeded=60)
    def answer() -> int:
        return 42

    @env.queue.task(name="broken", max_retries=0)
    def broken() -> None:
        raise ValueError("broken")

    a = env.queue.perform(answer)
    b = env.queue.perform(broken)

    def drain_later() -> None:
        time.sleep(0.2)
        with env.app.app_context():
            env.queue.drain()

    thread = threading.Thread(target=drain_later)
    thread.start()
    try:
        info = env.queue.wait(a, timeout=30)
        assert info is not None and info.state is TaskState.SUCCEEDED
        assert info.result == 42
        dead = env.queue.wait(b, timeout=datetime.timedelta(seconds=30))
        assert dead is not None and dead.state is TaskState.DEAD
        assert dead.error is not None and "broken" in dead.error
    finally:
        thread.join()


def test_wait_times_out_and_returns_none_when_gone(env: Env) -> None:
    @env.queue.task(name="later")
    def later() -> None:
        pass

    task_id = env.queue.perform(later, delay=3600)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=f"Task {task_id} .* still scheduled"):
        env.queue.wait(task_id, timeout=0.3)
    assert time.monotonic() - start >= 0.3
    env.queue.retry(task_id)
    env.queue.drain()  # succeeded, not kept: gone
    assert env.queue.wait(task_id, timeout=1) is None
    with pytest.raises(InvalidArgument, match="timeout must be"):
        env.queue.wait(task_id, timeout=-1)
    with pytest.raises(InvalidArgument, match="task_id must be an int"):
        env.queue.wait(t.cast(t.Any, "1"))


def test_kept_succeeded_tasks_are_never_exported(env: Env) -> None:
    @env.queue.task(name="done", keep_succeeded=60)
    def done() -> int:
        return 1

    env.queue.perform(done)
    env.queue.drain()
    env.queue.perform(done, delay=3600)
    for include_dead in (False, True):
        out = io.StringIO()
        exported = env.queue.export_tasks(out, include_dead=include_dead)
        assert exported.count == 1
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [r["status"] for r in records] == ["queued"]
