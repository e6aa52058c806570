"""``queue.stream(task_id)``: server-sent events of a task's state and
progress, read through the Flask test client on SQLite and PostgreSQL, with
the task run by ``queue.drain()`` in a thread of the test's."""

from __future__ import annotations

import json
import threading
import typing as t
from collections.abc import Iterator

import pytest
from conftest import Env
from flask import Flask
from helpers import TIMEOUT

from flask_plainqueue import current_task
from flask_plainqueue import InvalidArgument
from flask_plainqueue import PlainQueue
from flask_plainqueue.changes import hub_for


class Event(t.NamedTuple):
    event: str
    id: str
    data: t.Any

    @property
    def seq(self) -> int:
        return int(self.id.split(".")[0])


class Stream:
    """The events of one ``queue.stream`` response, read as they come."""

    def __init__(self, env: Env, task_id: int, last_event_id: str | None = None):
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self.response = env.app.test_client().get(
            f"/tasks/{task_id}/events", headers=headers, buffered=False
        )
        self._chunks = iter(t.cast("t.Iterable[bytes]", self.response.response))
        self._pending: list[Event | str] = []
        self.ended = False

    def _read(self) -> None:
        try:
            chunk = next(self._chunks).decode()
        except StopIteration:
            self.ended = True
            return
        for block in chunk.split("\n\n"):
            if not block:
                continue
            if block.startswith(":"):
                self._pending.append(block)
                continue
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                key, _, value = line.partition(": ")
                fields[key] = fields[key] + "\n" + value if key in fields else value
            self._pending.append(
                Event(fields["event"], fields["id"], json.loads(fields["data"]))
            )

    def next(self, *, comments: bool = False) -> Event | str:
        """The next event (or comment line, with ``comments``)."""
        while True:
            while not self._pending and not self.ended:
                self._read()
            if not self._pending:
                raise AssertionError("the stream ended")
            item = self._pending.pop(0)
            if comments or isinstance(item, Event):
                return item

    def event(self) -> Event:
        item = self.next()
        assert isinstance(item, Event)
        return item

    def until(self, name: str) -> list[Event]:
        """The events up to and including the first ``name`` event."""
        seen = []
        while True:
            seen.append(self.event())
            if seen[-1].event == name:
                return seen

    def finished(self) -> bool:
        """Whether the stream ends with no more events."""
        while not self._pending and not self.ended:
            self._read()
        return self.ended and not self._pending

    def close(self) -> None:
        self.response.close()


def _route(app: Flask, queue: PlainQueue, **options: t.Any) -> None:
    @app.get("/tasks/<int:task_id>/events")
    def task_events(task_id: int) -> t.Any:
        return queue.stream(task_id, **options)


class Gated(t.NamedTuple):
    started: threading.Event
    go: threading.Event


@pytest.fixture
def gated(env: Env) -> Iterator[tuple[Env, Gated]]:
    """A kept task ``report`` that reports 1, waits for ``go``, then reports
    2 to 100 in a tight loop and returns ``"ok"``."""
    gate = Gated(threading.Event(), threading.Event())

    @env.queue.task(name="report", keep_succeeded=600)
    def report(data: t.Any) -> str:
        current_task.report_progress({"step": 1})
        gate.started.set()
        assert gate.go.wait(TIMEOUT)
        for step in range(2, 101):
            current_task.report_progress({"step": step})
        return "ok"

    _route(env.app, env.queue)
    yield env, gate
    gate.go.set()


def _drain_in_thread(env: Env) -> threading.Thread:
    def run() -> None:
        with env.app.app_context():
            env.queue.drain()

    thread = threading.Thread(target=run, name="drain")
    thread.start()
    return thread


def test_events_in_order_until_done(gated: tuple[Env, Gated]) -> None:
    env, gate = gated
    with env.app.app_context():
        task_id = env.queue.perform("report", {})
    stream = Stream(env, task_id)
    assert stream.response.mimetype == "text/event-stream"
    assert stream.response.headers["Cache-Control"] == "no-cache"
    first = stream.event()
    assert (first.event, first.data) == (
        "state",
        {"state": "pending", "attempts": 0, "error": None},
    )
    drain = _drain_in_thread(env)
    try:
        running = stream.until("progress")
        assert [e.event for e in running] == ["state", "progress"]
        assert running[0].data == {"state": "running", "attempts": 1, "error": None}
        assert running[1].data == {"step": 1}
        gate.go.set()
        rest = stream.until("done")
    finally:
        gate.go.set()
        drain.join(TIMEOUT)
    steps = [e.data["step"] for e in rest if e.event == "progress"]
    # A hundred reports in a tight loop are coalesced into a few writes.
    assert steps[-1] == 100 and len(steps) < 10
    assert steps == sorted(set(steps))
    assert [e.event for e in rest][-1] == "done"
    assert rest[-1].data == {"state": "succeeded", "result": "ok"}
    assert {e.event for e in rest[:-1]} == {"progress"}
    seqs = [e.seq for e in [first, *running, *rest]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert stream.finished()


def test_last_event_id_resumes_without_repeating(gated: tuple[Env, Gated]) -> None:
    env, gate = gated
    with env.app.app_context():
        task_id = env.queue.perform("report", {})
    drain = _drain_in_thread(env)
    try:
        assert gate.started.wait(TIMEOUT)
        stream = Stream(env, task_id)
        before = stream.until("progress")
        assert [e.event for e in before] == ["state", "progress"]
        stream.close()
        # Nothing changed: a resumed stream has nothing to send until the
        # task moves on, and then only what is new.
        resumed = Stream(env, task_id, last_event_id=before[-1].id)
        gate.go.set()
        after = resumed.until("done")
    finally:
        gate.go.set()
        drain.join(TIMEOUT)
    assert {e.event for e in after[:-1]} == {"progress"}
    assert after[-1].data == {"state": "succeeded", "result": "ok"}
    assert after[0].seq == before[-1].seq + 1
    assert [e.seq for e in after] == list(range(after[0].seq, after[-1].seq + 1))
    # The same id again sends only the end; after the end, 204 stops the browser.
    again = Stream(env, task_id, last_event_id=before[-1].id)
    assert [e.event for e in again.until("done")] == ["progress", "done"]
    ended = env.app.test_client().get(
        f"/tasks/{task_id}/events", headers={"Last-Event-ID": after[-1].id}
    )
    assert ended.status_code == 204


def test_done_when_the_task_dies(env: Env) -> None:
    @env.queue.task(name="bad", max_retries=0)
    def bad() -> None:
        raise ValueError("nope")

    _route(env.app, env.queue)
    with env.app.app_context():
        task_id = env.queue.perform(bad)
        stream = Stream(env, task_id)
        assert stream.event().data["state"] == "pending"
        env.queue.drain()
    assert stream.event().data == {"state": "dead", "error": "ValueError: nope"}
    assert stream.finished()


def test_done_when_the_task_is_deleted(env: Env) -> None:
    @env.queue.task(name="later")
    def later() -> None: ...

    _route(env.app, env.queue)
    with env.app.app_context():
        task_id = env.queue.perform(later, delay=3600)
        stream = Stream(env, task_id)
        assert stream.event().data["state"] == "scheduled"
        assert env.queue.cancel(task_id)
    done = stream.event()
    assert (done.event, done.data) == ("done", {"state": "gone"})
    assert stream.finished()


def test_done_when_a_task_that_is_not_kept_succeeds(env: Env) -> None:
    @env.queue.task(name="quick", keep_succeeded=0)
    def quick() -> None: ...

    _route(env.app, env.queue)
    with env.app.app_context():
        task_id = env.queue.perform(quick)
        stream = Stream(env, task_id)
        assert stream.event().data["state"] == "pending"
        env.queue.drain()
    assert stream.event().data == {"state": "gone"}


def test_an_unknown_task_is_done_at_once(env: Env) -> None:
    _route(env.app, env.queue)
    stream = Stream(env, 987654)
    assert stream.response.status_code == 200
    done = stream.event()
    assert (done.event, done.data) == ("done", {"state": "gone"})
    assert stream.finished()


def test_keep_alive_comments_on_an_idle_stream(env: Env) -> None:
    @env.queue.task(name="later")
    def later() -> None: ...

    _route(env.app, env.queue, keepalive=0.05)
    with env.app.app_context():
        task_id = env.queue.perform(later, delay=3600)
    stream = Stream(env, task_id)
    assert isinstance(stream.next(comments=True), tuple)
    assert stream.next(comments=True) == ": keep-alive"
    assert stream.next(comments=True) == ": keep-alive"
    stream.close()


def test_closing_the_stream_unsubscribes(env: Env) -> None:
    @env.queue.task(name="later")
    def later() -> None: ...

    _route(env.app, env.queue)
    with env.app.app_context():
        task_id = env.queue.perform(later, delay=3600)
        hub = hub_for(env.queue.store())
    streams = [Stream(env, task_id) for _ in range(3)]
    for stream in streams:
        stream.event()
    # One watcher for every open stream of the app.
    assert hub.subscribers() == 3 and hub.watching
    for stream in streams:
        stream.close()
    assert hub.subscribers() == 0 and not hub.watching


def test_stream_checks_its_arguments(env: Env) -> None:
    with env.app.test_request_context():
        with pytest.raises(InvalidArgument, match="task_id must be an int"):
            env.queue.stream("1")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="keepalive"):
            env.queue.stream(1, keepalive=0)


@pytest.mark.postgresql
def test_postgresql_wakes_only_the_streams_of_changed_tasks(
    postgresql_uri: str, tmp_path: t.Any
) -> None:
    from conftest import create_test_app

    app, db, queue = create_test_app(postgresql_uri, tmp_path)
    with app.app_context():
        db.create_all()
        store = queue.store()
    hub = hub_for(store)
    changed, other = hub.subscribe(1), hub.subscribe(2)
    try:
        # Once LISTEN is in place the watcher wakes every stream, as it does
        # after reconnecting (notifications may have been missed).
        assert changed.changed.wait(TIMEOUT) and other.changed.wait(TIMEOUT)
        changed.changed.clear()
        other.changed.clear()
        with store.write() as conn:
            store.notify_changed(conn, [1])
        assert changed.changed.wait(TIMEOUT)
        assert not other.changed.wait(0.2)
    finally:
        hub.unsubscribe(changed)
        hub.unsubscribe(other)
        with app.app_context():
            db.drop_all()
            db.engine.dispose()
