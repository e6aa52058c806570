"""Prometheus metrics of the queue, behind
:meth:`~flask_plainqueue.PlainQueue.metrics_view`: gauges read from the
database at scrape time through the public API, and counters of finished
attempts fed by the task signals in the process that ran them.

Needs the ``prometheus`` extra (``prometheus_client``); nothing else in the
package imports this module, so the core never does.
"""

from __future__ import annotations

import logging
import threading
import typing as t
import weakref
from collections.abc import Callable
from collections.abc import Iterable

from flask import current_app
from flask import Flask
from flask.wrappers import Response

from . import signals
from .exceptions import ConfigurationError
from .exceptions import InvalidArgument
from .exceptions import UnknownTask
from .info import STATES
from .info import WORKER_STATES
from .schema import TaskState

try:
    from prometheus_client import CONTENT_TYPE_LATEST
    from prometheus_client import generate_latest
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector
    from prometheus_client.registry import CollectorRegistry
except ImportError as exc:
    raise ConfigurationError(
        "Prometheus metrics need prometheus_client: pip install"
        " 'flask-plainqueue[prometheus]'."
    ) from exc

if t.TYPE_CHECKING:
    from blinker import Signal

    # A type-only back edge: the metrics use the queue's public API.
    from .extension import PlainQueue

#: The counters, as ``(outcome, metric name, help)``; each outcome is the
#: task signal that feeds it.
COUNTERS: tuple[tuple[str, str, str], ...] = (
    (
        "succeeded",
        "plainqueue_tasks_succeeded",
        "Attempts that succeeded in this process, per queue and task.",
    ),
    (
        "failed",
        "plainqueue_tasks_failed",
        "Attempts that failed in this process (every failed attempt, the last"
        " one of a dead task included), per queue and task.",
    ),
    (
        "dead",
        "plainqueue_tasks_dead",
        "Tasks that ran out of retries in this process, per queue and task.",
    ),
)

_Key = tuple[str, str]  # (queue, task name)

logger = logging.getLogger(__name__)


class QueueMetrics:
    """The Prometheus side of one :class:`~flask_plainqueue.PlainQueue`: a
    :class:`~prometheus_client.CollectorRegistry` of its own per app, and
    the counters of each app's finished attempts.

    Creating it connects receivers to ``task_succeeded``, ``task_failed`` and
    ``task_dead``; until then a worker skips sending them (nothing listens).
    """

    def __init__(self, queue: PlainQueue) -> None:
        self._queue = queue
        self._lock = threading.Lock()
        self._counts: weakref.WeakKeyDictionary[Flask, dict[str, dict[_Key, int]]] = (
            weakref.WeakKeyDictionary()
        )
        self._registries: weakref.WeakKeyDictionary[Flask, CollectorRegistry] = (
            weakref.WeakKeyDictionary()
        )
        # Kept on self: blinker holds receivers weakly, so they live exactly
        # as long as this object (that is, as long as the queue).
        self._receivers: list[tuple[Signal, Callable[..., None]]] = []
        for outcome, signal in (
            ("succeeded", signals.task_succeeded),
            ("failed", signals.task_failed),
            ("dead", signals.task_dead),
        ):
            receiver = self._receiver(outcome)
            signal.connect(receiver)
            self._receivers.append((signal, receiver))

    def _receiver(self, outcome: str) -> Callable[..., None]:
        def receive(sender: object, **kwargs: t.Any) -> None:
            self.count(sender, outcome, kwargs.get("task"))

        return receive

    def count(self, app: object, outcome: str, name: object) -> None:
        """Count one ``outcome`` of task ``name`` run by ``app``'s worker, if
        ``app`` is registered with this queue."""
        if not isinstance(app, Flask) or not isinstance(name, str):
            return
        if app.extensions.get("plainqueue") is not self._queue:
            return
        key = (self._queue_of(name), name)
        with self._lock:
            per_app = self._counts.setdefault(app, {o: {} for o, _, _ in COUNTERS})
            per_outcome = per_app[outcome]
            per_outcome[key] = per_outcome.get(key, 0) + 1

    def _queue_of(self, name: str) -> str:
        # A task's queue is its definition's: perform() takes no queue, and a
        # worker runs only the names registered with it.
        try:
            return self._queue.registry.get(name).options.queue
        except UnknownTask:
            return ""

    def counts(self, app: Flask) -> dict[str, dict[_Key, int]]:
        """A copy of ``app``'s counters: ``{outcome: {(queue, task): n}}``."""
        with self._lock:
            per_app = self._counts.get(app, {})
            return {o: dict(per_app.get(o, {})) for o, _, _ in COUNTERS}

    def registry(self, app: Flask) -> CollectorRegistry:
        """``app``'s registry, holding only this queue's collector."""
        with self._lock:
            registry = self._registries.get(app)
            if registry is None:
                registry = CollectorRegistry(auto_describe=False)
                registry.register(QueueCollector(self, app))
                self._registries[app] = registry
            return registry

    def families(self, app: Flask) -> list[Metric]:
        """Every metric of ``app``'s queue now; needs ``app``'s context."""
        queue = self._queue
        status = queue.status()
        workers = queue.workers()
        # Every registered task has a series from the start, so a dashboard
        # or an alert sees 0, not "no data", and rate() counts the first
        # failure.
        known: dict[_Key, dict[TaskState, int]] = {
            (d.options.queue, d.name): {s: 0 for s in STATES} for d in queue.registry
        }
        for queue_name, names in status.queues.items():
            for name, per_state in names.items():
                known[(queue_name, name)] = dict(per_state)
        keys = sorted(known)

        tasks = GaugeMetricFamily(
            "plainqueue_tasks",
            "Stored tasks per queue, task and state (pending: due now).",
            labels=["queue", "task", "state"],
        )
        for key in keys:
            for state in STATES:
                tasks.add_metric([*key, state.value], known[key][state])

        ages = GaugeMetricFamily(
            "plainqueue_oldest_due_age_seconds",
            "Seconds the longest-waiting due task of the queue that is not paused"
            " has been due (0: none).",
            labels=["queue"],
        )
        for queue_name in sorted({q for q, _ in keys}):
            due = sum(known[k][TaskState.PENDING] for k in keys if k[0] == queue_name)
            # Only a queue with due tasks costs a read of its own. The age is
            # health()'s, so an alert on it agrees with `flask queue health
            # --max-age` and a pause for a deploy pages nobody.
            age = None
            if due:
                try:
                    age = queue.health(queues=[queue_name]).oldest_due_age
                except InvalidArgument:
                    # A hand-written row's queue name that no task may have.
                    logger.warning("Queue %r: its due age is not exported.", queue_name)
            ages.add_metric([queue_name], age or 0.0)

        paused = queue.paused()
        paused_family = GaugeMetricFamily(
            "plainqueue_paused",
            "1 for each paused queue (kind=queue) and task name (kind=task).",
            labels=["kind", "name"],
        )
        for kind, paused_names in (("queue", paused.queues), ("task", paused.tasks)):
            for name in sorted(paused_names):
                paused_family.add_metric([kind, name], 1)

        by_state = {state: 0 for state in WORKER_STATES}
        for worker in workers:
            by_state[worker.state] = by_state.get(worker.state, 0) + 1
        worker_family = GaugeMetricFamily(
            "plainqueue_workers",
            "Registered workers per state (running, stopping, lost).",
            labels=["state"],
        )
        for state_name, n in by_state.items():
            worker_family.add_metric([state_name], n)

        families: list[Metric] = [tasks, ages, paused_family, worker_family]
        counts = self.counts(app)
        defined = {(d.options.queue, d.name) for d in queue.registry}
        for outcome, metric, help_text in COUNTERS:
            counter = CounterMetricFamily(metric, help_text, labels=["queue", "task"])
            values = dict.fromkeys(defined, 0) | counts[outcome]
            for key in sorted(values):
                counter.add_metric(list(key), values[key])
            families.append(counter)
        return families

    def view(self) -> Response:
        """The current app's metrics in Prometheus' text format."""
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        return Response(
            generate_latest(self.registry(app)), content_type=CONTENT_TYPE_LATEST
        )


class QueueCollector(Collector):
    """Collects one app's queue metrics at scrape time, in that app's
    context (so it also works from ``prometheus_client``'s own HTTP server
    thread)."""

    def __init__(self, metrics: QueueMetrics, app: Flask) -> None:
        self._metrics = metrics
        # Weak: the registry holding this collector is kept per app, in a
        # WeakKeyDictionary whose value must not keep its key alive.
        self._app = weakref.ref(app)

    def collect(self) -> Iterable[Metric]:
        app = self._app()
        if app is None:
            return []
        with app.app_context():
            return self._metrics.families(app)
