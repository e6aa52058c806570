"""``queue.metrics_view()`` on SQLite and PostgreSQL: registered on a route,
scraped with the Flask test client and parsed with ``prometheus_client``'s own
parser; counters kept per app; receivers connected only for metrics."""

from __future__ import annotations

import datetime
import gc
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from blinker import Signal
from conftest import Env
from flask import Flask

from flask_plainqueue import signals
from flask_plainqueue.roster import Roster
from flask_plainqueue.roster import WorkerRow

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

#: ``{(sample name, ((label, value), ...)): value}``
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

STATES = ("pending", "scheduled", "running", "succeeded", "dead")


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """The families' types by name, and every sample, from a scrape."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = sample.value
    return types, samples


def scrape(app: Flask, path: str = "/metrics") -> tuple[dict[str, str], Samples]:
    response = app.test_client().get(path)
    assert response.status_code == 200
    assert response.content_type == prometheus_client.CONTENT_TYPE_LATEST
    return parse(response.get_data(as_text=True))


def task_samples(queue: str, task: str, **states: int) -> Samples:
    """The ``plainqueue_tasks`` samples of one task: ``states`` given, 0 else."""
    return {
        (
            "plainqueue_tasks",
            (("queue", queue), ("state", state), ("task", task)),
        ): float(states.get(state, 0))
        for state in STATES
    }


def counter_samples(outcome: str, values: dict[tuple[str, str], int]) -> Samples:
    return {
        (
            f"plainqueue_tasks_{outcome}_total",
            (("queue", queue), ("task", task)),
        ): float(n)
        for (queue, task), n in values.items()
    }


def register_worker(env: Env, worker_id: str, state: str, age: float) -> None:
    """A row in the workers table, last heard of ``age`` seconds ago."""
    store = env.queue.store()
    beat = store.clock() - datetime.timedelta(seconds=age)
    Roster(store).register(
        WorkerRow(
            id=worker_id,
            host="elsewhere",
            pid=4242,
            kind="process",
            queues=None,
            tasks=(),
            concurrency=1,
            version="0.0",
            state=state,
            started=beat,
            heartbeat=beat,
        )
    )


@pytest.fixture
def tasks(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[datetime.datetime]:
    """Tasks of three queues, the metrics view on ``/metrics``, and the
    store's clock stopped (yielded), so ages are exact."""
    queue = env.queue

    @queue.task(name="m.ok")
    def ok() -> None:
        pass

    @queue.task(name="m.flaky", max_retries=1, retry_interval=0.0)
    def flaky() -> None:
        raise RuntimeError("flaky")

    @queue.task(name="m.later", queue="slow", max_retries=3, retry_interval=3600.0)
    def later() -> None:
        raise RuntimeError("later")

    @queue.task(name="m.slow", queue="slow")
    def slow() -> None:
        pass

    @queue.task(name="m.idle", queue="idle")
    def idle() -> None:
        pass

    env.app.add_url_rule("/metrics", view_func=queue.metrics_view())
    with env.app.app_context():
        store = queue.store()
        now = store.clock()
        monkeypatch.setattr(store, "clock", lambda: now)
        yield now


def test_scrape_after_drain(env: Env, tasks: datetime.datetime) -> None:
    queue = env.queue
    now = tasks
    with env.app.app_context():
        for _ in range(3):
            queue.perform("m.ok")
        queue.perform("m.ok", delay=3600)
        queue.perform("m.flaky")
        queue.perform("m.later")
        # 3 successes; m.flaky fails twice and dies; m.later fails once and
        # waits an hour for its retry.
        assert queue.drain() == 6
        queue.perform("m.slow", run_at=now - datetime.timedelta(seconds=90))
        # Due but paused: counted, and left out of the age, as by health().
        queue.perform("m.idle", run_at=now - datetime.timedelta(seconds=600))
        queue.pause(queue="idle")
        queue.pause(task="m.later")
        register_worker(env, "w-running", "running", age=1)
        register_worker(env, "w-stopping", "stopping", age=1)
        register_worker(env, "w-lost", "running", age=3600)

    types, samples = scrape(env.app)

    assert types == {
        "plainqueue_tasks": "gauge",
        "plainqueue_oldest_due_age_seconds": "gauge",
        "plainqueue_paused": "gauge",
        "plainqueue_workers": "gauge",
        "plainqueue_tasks_succeeded": "counter",
        "plainqueue_tasks_failed": "counter",
        "plainqueue_tasks_dead": "counter",
    }
    defined = {
        ("default", "m.ok"): 0,
        ("default", "m.flaky"): 0,
        ("slow", "m.later"): 0,
        ("slow", "m.slow"): 0,
        ("idle", "m.idle"): 0,
    }
    expected: Samples = {
        **task_samples("default", "m.ok", scheduled=1),
        **task_samples("default", "m.flaky", dead=1),
        **task_samples("slow", "m.later", scheduled=1),
        **task_samples("slow", "m.slow", pending=1),
        **task_samples("idle", "m.idle", pending=1),
        ("plainqueue_oldest_due_age_seconds", (("queue", "default"),)): 0.0,
        ("plainqueue_oldest_due_age_seconds", (("queue", "idle"),)): 0.0,
        ("plainqueue_oldest_due_age_seconds", (("queue", "slow"),)): 90.0,
        ("plainqueue_paused", (("kind", "queue"), ("name", "idle"))): 1.0,
        ("plainqueue_paused", (("kind", "task"), ("name", "m.later"))): 1.0,
        ("plainqueue_workers", (("state", "running"),)): 1.0,
        ("plainqueue_workers", (("state", "stopping"),)): 1.0,
        ("plainqueue_workers", (("state", "lost"),)): 1.0,
        **counter_samples("succeeded", defined | {("default", "m.ok"): 3}),
        **counter_samples(
            "failed",
            defined | {("default", "m.flaky"): 2, ("slow", "m.later"): 1},
        ),
        **counter_samples("dead", defined | {("default", "m.flaky"): 1}),
    }
    assert samples == expected


def test_counters_grow_between_scrapes(env: Env, tasks: datetime.datetime) -> None:
    def succeeded(samples: Samples) -> float:
        key = (("queue", "default"), ("task", "m.ok"))
        return samples[("plainqueue_tasks_succeeded_total", key)]

    assert succeeded(scrape(env.app)[1]) == 0
    with env.app.app_context():
        env.queue.perform("m.ok")
        assert env.queue.drain() == 1
    assert succeeded(scrape(env.app)[1]) == 1
    with env.app.app_context():
        env.queue.perform_many("m.ok", [None, None])
        assert env.queue.drain() == 2
    assert succeeded(scrape(env.app)[1]) == 3


def test_counters_are_per_app(
    env: Env, tasks: datetime.datetime, database_uri: str, tmp_path: Path
) -> None:
    """A second app on the same queue and database: the gauges are the
    database's, the same from both; the counters count each app's attempts."""
    other = Flask(__name__, instance_path=str(tmp_path / "other"))
    other.config.update(SQLALCHEMY_DATABASE_URI=database_uri, TESTING=True)
    env.db.init_app(other)
    env.queue.init_app(other)
    other.add_url_rule("/queue-metrics", view_func=env.queue.metrics_view())
    with env.app.app_context():
        env.queue.perform("m.ok")
        assert env.queue.drain() == 1
        env.queue.perform("m.ok", delay=3600)

    def split(samples: Samples) -> tuple[Samples, Samples]:
        counters = {k: v for k, v in samples.items() if k[0].endswith("_total")}
        gauges = {k: v for k, v in samples.items() if k not in counters}
        return gauges, counters

    mine = split(scrape(env.app)[1])
    theirs = split(scrape(other, "/queue-metrics")[1])
    ok = ("plainqueue_tasks_succeeded_total", (("queue", "default"), ("task", "m.ok")))
    assert mine[1][ok] == 1
    assert theirs[1][ok] == 0
    assert mine[1].keys() == theirs[1].keys()
    scheduled = task_samples("default", "m.ok", scheduled=1)
    assert scheduled.items() <= mine[0].items()
    # Scraped a moment later the worker rows are the same, so every gauge is.
    assert mine[0] == theirs[0]
    with other.app_context():
        env.db.engine.dispose()


def test_registry_outside_a_request(env: Env, tasks: datetime.datetime) -> None:
    """``metrics_registry(app)`` collects in the app's own context, as
    ``prometheus_client``'s HTTP server thread needs."""
    with env.app.app_context():
        env.queue.perform("m.slow", delay=3600)
        registry = env.queue.metrics_registry()
    assert registry is env.queue.metrics_registry(env.app)
    _, samples = parse(prometheus_client.generate_latest(registry).decode())
    assert task_samples("slow", "m.slow", scheduled=1).items() <= samples.items()
    # Only the queue's metrics: not the process or platform collectors of
    # prometheus_client's default registry.
    assert {name for name, _ in samples} == {
        "plainqueue_tasks",
        "plainqueue_oldest_due_age_seconds",
        "plainqueue_workers",
        "plainqueue_tasks_succeeded_total",
        "plainqueue_tasks_failed_total",
        "plainqueue_tasks_dead_total",
    }


TASK_SIGNALS = (
    signals.task_enqueued,
    signals.task_started,
    signals.task_succeeded,
    signals.task_failed,
    signals.task_dead,
)


def test_receivers_only_with_metrics(env: Env) -> None:
    """A queue connects receivers when metrics are asked for, and only to the
    three signals they count, so without metrics a worker still skips
    sending every task signal (nothing listens)."""
    # Receivers of earlier tests' queues (freed with them) go now, not midway.
    gc.collect()
    before = {signal: set(signal.receivers) for signal in TASK_SIGNALS}

    def added() -> dict[Signal, int]:
        return {s: len(set(s.receivers) - before[s]) for s in TASK_SIGNALS}

    @env.queue.task(name="m.plain")
    def plain() -> None:
        pass

    with env.app.app_context():
        env.queue.perform("m.plain")
        assert env.queue.drain() == 1
    assert set(added().values()) == {0}

    env.queue.metrics_view()
    env.queue.metrics_view()  # once is enough: no second set of receivers
    assert added() == {
        signals.task_enqueued: 0,
        signals.task_started: 0,
        signals.task_succeeded: 1,
        signals.task_failed: 1,
        signals.task_dead: 1,
    }


def test_other_senders_are_not_counted(env: Env, tasks: datetime.datetime) -> None:
    """Receivers hear every sender; only apps registered with this queue count."""
    stranger = Flask("stranger")
    signals.send(signals.task_succeeded, stranger, task_id=1, task="m.ok")
    signals.send(signals.task_succeeded, object(), task_id=1, task="m.ok")
    _, samples = scrape(env.app)
    ok = ("plainqueue_tasks_succeeded_total", (("queue", "default"), ("task", "m.ok")))
    assert samples[ok] == 0
    signals.send(signals.task_succeeded, env.app, task_id=1, task="m.ok")
    _, samples = scrape(env.app)
    assert samples[ok] == 1


EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "metrics_app.py"


def test_guarded_view_example(database_uri: str, tmp_path: Path) -> None:
    """The operating page's example: the view answers only with the token."""
    spec = importlib.util.spec_from_file_location("metrics_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    app = example.create_app(
        SQLALCHEMY_DATABASE_URI=database_uri, METRICS_TOKEN="s3cret", TESTING=True
    )
    with app.app_context():
        example.db.create_all()
    try:
        client = app.test_client()
        assert client.get("/metrics").status_code == 401
        wrong = {"Authorization": "Bearer s3cre"}
        assert client.get("/metrics", headers=wrong).status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        response = client.get("/metrics", headers=right)
        assert response.status_code == 200
        _, samples = parse(response.get_data(as_text=True))
        assert samples[("plainqueue_workers", (("state", "running"),))] == 0
    finally:
        with app.app_context():
            example.db.drop_all()
            example.db.engine.dispose()


def test_a_hand_written_queue_name_does_not_break_the_scrape(
    env: Env, tasks: datetime.datetime, caplog: pytest.LogCaptureFixture
) -> None:
    """A row whose queue no task may have (an empty name, written by hand) is
    counted, with no due age instead of a failed scrape."""
    with env.app.app_context():
        task_id = env.queue.perform("m.ok")
        Task = env.queue.Task
        env.db.session.execute(
            sa.update(Task).where(Task.id == task_id).values(queue="")
        )
        env.db.session.commit()
    _, samples = scrape(env.app)
    assert task_samples("", "m.ok", pending=1).items() <= samples.items()
    assert samples[("plainqueue_oldest_due_age_seconds", (("queue", ""),))] == 0
    assert "Queue '': its due age is not exported." in caplog.text
