"""Receivers of flask-plainqueue's signals, shown on the signals page and run by
``tests/integration/test_signals.py``."""

from __future__ import annotations

# [imports]
import collections
import threading
import typing as t

import sentry_sdk
from flask import Flask

from flask_plainqueue import signals

# [/imports]


# [sentry]


@signals.task_dead.connect
def report_dead_task(
    app: Flask, *, task_id: str, task: str, exception: BaseException, **extra: t.Any
) -> None:
    """Send a task that ran out of retries to Sentry, tagged with its name."""
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("plainqueue.task", task)
        scope.set_context("plainqueue", {"task_id": task_id, "app": app.name})
        sentry_sdk.capture_exception(exception)


# [/sentry]


# [metrics]
class TaskMetrics:
    """Counts finished attempts per task and outcome, and their total run time;
    swap the dicts for your metrics library's counters (Prometheus, StatsD)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # receivers run on the worker's threads
        self.attempts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.seconds: collections.defaultdict[str, float] = collections.defaultdict(
            float
        )

    def init_app(self, app: Flask) -> None:
        # weak=False: the bound methods below would otherwise be collected.
        signals.task_succeeded.connect(self.succeeded, sender=app, weak=False)
        signals.task_failed.connect(self.failed, sender=app, weak=False)

    def succeeded(
        self, app: Flask, *, task: str, duration: float, **extra: t.Any
    ) -> None:
        self._count(task, "succeeded", duration)

    def failed(self, app: Flask, *, task: str, duration: float, **extra: t.Any) -> None:
        self._count(task, "failed", duration)

    def _count(self, task: str, outcome: str, duration: float) -> None:
        with self.lock:
            self.attempts[task, outcome] += 1
            self.seconds[task] += duration


metrics = TaskMetrics()
# In the app factory: metrics.init_app(app)
# [/metrics]
