"""Every signal with connected receivers, through ``perform``, ``drain`` and a
worker's ``run``; a raising receiver never breaks the worker; and the
receivers shown in ``docs/signals.rst`` (``docs/examples/signal_receivers.py``)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import types
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from blinker import Signal
from conftest import create_test_app
from conftest import Env

from flask_plainqueue import signals
from flask_plainqueue import TaskDataError

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "signal_receivers.py"


class Recorder:
    """Records ``(sender, kwargs)`` of each call of one signal."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, dict[str, t.Any]]] = []

    def __call__(self, sender: object, **kwargs: t.Any) -> None:
        self.calls.append((sender, kwargs))

    @property
    def kwargs(self) -> list[dict[str, t.Any]]:
        return [kw for _, kw in self.calls]


@contextlib.contextmanager
def recording(signal: Signal, sender: t.Any = None) -> Iterator[Recorder]:
    recorder = Recorder()
    if sender is None:
        signal.connect(recorder, weak=False)
    else:
        signal.connect(recorder, sender=sender, weak=False)
    try:
        yield recorder
    finally:
        signal.disconnect(recorder)


@pytest.fixture
def tasks(env: Env) -> Iterator[None]:
    queue = env.queue

    @queue.task(name="s.ok")
    def ok(data: t.Any) -> None:
        pass

    @queue.task(name="s.flaky", max_retries=1, retry_interval=0.0)
    def flaky(data: t.Any) -> None:
        raise RuntimeError(f"broken {data}")

    with env.app.app_context():
        yield


@pytest.mark.usefixtures("tasks")
def test_task_enqueued(env: Env) -> None:
    with recording(signals.task_enqueued, env.app) as rec:
        one = env.queue.perform("s.ok", 1)
        many = env.queue.perform_many("s.ok", [2, 3])
    assert rec.calls == [
        (env.app, {"task_id": one, "task": "s.ok"}),
        (env.app, {"task_id": many[0], "task": "s.ok"}),
        (env.app, {"task_id": many[1], "task": "s.ok"}),
    ]
    # The ids are ints, as perform returns them.
    assert all(isinstance(kw["task_id"], int) for kw in rec.kwargs)


@pytest.mark.usefixtures("tasks")
def test_started_and_succeeded_through_drain(env: Env) -> None:
    task_id = env.queue.perform("s.ok", 1)
    with (
        recording(signals.task_started, env.app) as started,
        recording(signals.task_succeeded, env.app) as succeeded,
        recording(signals.task_failed, env.app) as failed,
    ):
        assert env.queue.drain() == 1
    assert started.calls == [(env.app, {"task_id": task_id, "task": "s.ok"})]
    assert type(started.kwargs[0]["task_id"]) is int
    ((sender, kwargs),) = succeeded.calls
    assert sender is env.app
    assert kwargs.keys() == {"task_id", "task", "duration"}
    assert kwargs["task_id"] == task_id and kwargs["task"] == "s.ok"
    assert isinstance(kwargs["duration"], float) and kwargs["duration"] >= 0
    assert failed.calls == []


@pytest.mark.usefixtures("tasks")
def test_failed_on_every_attempt_and_dead_once(env: Env) -> None:
    task_id = env.queue.perform("s.flaky", ["x"])
    with (
        recording(signals.task_started, env.app) as started,
        recording(signals.task_failed, env.app) as failed,
        recording(signals.task_dead, env.app) as dead,
        recording(signals.task_succeeded, env.app) as succeeded,
    ):
        assert env.queue.drain() == 2  # max_retries=1: two attempts
    assert len(started.calls) == 2
    assert [kw["task_id"] for kw in failed.kwargs] == [task_id, task_id]
    for kwargs in failed.kwargs:
        assert kwargs.keys() == {"task_id", "task", "duration", "exception"}
        assert isinstance(kwargs["exception"], RuntimeError)
        assert str(kwargs["exception"]) == "broken ['x']"
        assert kwargs["duration"] >= 0
    ((sender, kwargs),) = dead.calls
    assert sender is env.app
    assert kwargs["task_id"] == task_id and kwargs["task"] == "s.flaky"
    assert isinstance(kwargs["exception"], RuntimeError)
    assert succeeded.calls == []


@pytest.mark.usefixtures("tasks")
def test_worker_started_and_stopped(env: Env) -> None:
    env.queue.perform("s.ok", 1)
    worker = env.queue.worker(env.app)
    with (
        recording(signals.worker_started, env.app) as started,
        recording(signals.worker_stopped, env.app) as stopped,
        recording(signals.task_succeeded, env.app) as succeeded,
    ):
        worker.run(burst=True)
    env.queue.forget_worker(worker)
    assert started.calls == [(env.app, {"worker_id": worker.id})]
    assert stopped.calls == [(env.app, {"worker_id": worker.id})]
    assert len(succeeded.calls) == 1


@pytest.mark.usefixtures("tasks")
def test_receivers_for_another_app_get_nothing(env: Env, tmp_path: Path) -> None:
    other, _, _ = create_test_app(f"sqlite:///{tmp_path / 'other.db'}", tmp_path / "o")
    env.queue.perform("s.ok", 1)
    with (
        recording(signals.task_started, other) as for_other,
        recording(signals.task_started) as for_any,
    ):
        env.queue.drain()
    assert for_other.calls == []
    assert len(for_any.calls) == 1


@pytest.mark.usefixtures("tasks")
def test_raising_receiver_is_logged_and_never_breaks_the_worker(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(sender: object, **kwargs: t.Any) -> None:
        raise ZeroDivisionError("receiver bug")

    ok = env.queue.perform("s.ok", 1)
    flaky = env.queue.perform("s.flaky", 2)
    explosive = [
        signals.task_started,
        signals.task_succeeded,
        signals.task_failed,
        signals.task_dead,
    ]
    for signal in explosive:
        signal.connect(explode, sender=env.app, weak=False)
    try:
        with (
            recording(signals.task_succeeded, env.app) as succeeded,
            recording(signals.task_dead, env.app) as dead,
            caplog.at_level(logging.ERROR, logger="flask_plainqueue.signals"),
        ):
            assert env.queue.drain() == 3
    finally:
        for signal in explosive:
            signal.disconnect(explode)
    # Later receivers still ran, and the tasks were settled normally.
    assert [kw["task_id"] for kw in succeeded.kwargs] == [ok]
    assert [kw["task_id"] for kw in dead.kwargs] == [flaky]
    with env.db.engine.connect() as conn:
        rows = conn.execute(env.queue.Task.__table__.select()).all()
    assert [(r.id, r.status) for r in rows] == [(flaky, "dead")]
    logged = [r for r in caplog.records if "receiver of" in r.getMessage()]
    names = {r.getMessage().split()[3] for r in logged}
    assert names == {
        "plainqueue.task-started",
        "plainqueue.task-succeeded",
        "plainqueue.task-failed",
        "plainqueue.task-dead",
    }
    assert all(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in logged)
    assert {getattr(r, "task_id", None) for r in logged} == {ok, flaky}


# -- the documented receivers ----------------------------------------------------


class FakeScope:
    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.contexts: dict[str, dict[str, t.Any]] = {}

    def set_tag(self, key: str, value: str) -> None:
        self.tags[key] = value

    def set_context(self, key: str, value: dict[str, t.Any]) -> None:
        self.contexts[key] = value


class FakeSentry(types.ModuleType):
    """Stands in for ``sentry_sdk``: records what would be sent."""

    def __init__(self) -> None:
        super().__init__("sentry_sdk")
        self.captured: list[tuple[BaseException, FakeScope]] = []
        self._scope: FakeScope | None = None

    @contextlib.contextmanager
    def new_scope(self) -> Iterator[FakeScope]:
        self._scope = FakeScope()
        try:
            yield self._scope
        finally:
            self._scope = None

    def capture_exception(self, exc: BaseException) -> None:
        assert self._scope is not None, "captured outside the scope"
        self.captured.append((exc, self._scope))


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[t.Any, FakeSentry]]:
    sentry = FakeSentry()
    monkeypatch.setitem(sys.modules, "sentry_sdk", sentry)
    spec = importlib.util.spec_from_file_location("signal_receivers", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module, sentry
    finally:
        signals.task_dead.disconnect(module.report_dead_task)
        signals.task_succeeded.disconnect(module.metrics.succeeded)
        signals.task_failed.disconnect(module.metrics.failed)


@pytest.mark.usefixtures("tasks")
def test_documented_sentry_receiver(
    env: Env, example: tuple[t.Any, FakeSentry]
) -> None:
    module, sentry = example
    task_id = env.queue.perform("s.flaky", ["z"])
    env.queue.perform("s.ok", 1)
    env.queue.drain()
    ((exc, scope),) = sentry.captured
    assert isinstance(exc, RuntimeError) and str(exc) == "broken ['z']"
    assert scope.tags == {"plainqueue.task": "s.flaky"}
    assert scope.contexts == {"plainqueue": {"task_id": task_id, "app": env.app.name}}


@pytest.mark.usefixtures("tasks")
def test_documented_metrics_receiver(
    env: Env, example: tuple[t.Any, FakeSentry]
) -> None:
    module, _ = example
    module.metrics.init_app(env.app)
    env.queue.perform("s.flaky", ["z"])
    env.queue.perform_many("s.ok", [1, 2, 3])
    env.queue.drain()
    assert module.metrics.attempts == {
        ("s.ok", "succeeded"): 3,
        ("s.flaky", "failed"): 2,
    }
    assert set(module.metrics.seconds) == {"s.ok", "s.flaky"}


@pytest.mark.usefixtures("tasks")
def test_undecodable_data_sends_failed_and_dead(env: Env) -> None:
    # Data is text on every database, so a hand-written row may hold anything.
    task_id = env.queue.perform("s.ok", 1)
    table = env.queue.Task.__table__
    with env.db.engine.begin() as conn:
        conn.execute(
            table.update().where(table.c.id == task_id).values(data="{not json")
        )
    with (
        recording(signals.task_started, env.app) as started,
        recording(signals.task_failed, env.app) as failed,
        recording(signals.task_dead, env.app) as dead,
    ):
        env.queue.drain()
    assert started.calls == []
    for rec in (failed, dead):
        ((sender, kwargs),) = rec.calls
        assert sender is env.app
        assert kwargs["task_id"] == task_id and kwargs["task"] == "s.ok"
        assert kwargs["duration"] == 0.0
        assert isinstance(kwargs["exception"], TaskDataError)
