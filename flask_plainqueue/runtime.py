"""What the extension keeps per registered app: its settings, its store, and
the workers running for it in this process (the embedded one included).

An app is referenced only weakly, so an app that is dropped (tests create
many) is freed with its runtime.
"""

from __future__ import annotations

import threading
import typing as t
import weakref
from collections.abc import Sequence

from .embedded import at_exit
from .embedded import WorkerThread
from .store import AppParts
from .worker import Worker

if t.TYPE_CHECKING:
    from flask import Flask


class AppRuntime:
    """The queue's runtime for one app.

    :param app: the app (kept as a weak reference).
    :param parts: its database, queue storage, task definitions and settings.
    """

    def __init__(
        self,
        app: Flask,
        parts: AppParts,
    ) -> None:
        self._app = weakref.ref(app)
        self.parts = parts
        self.db = parts.db
        self.store = parts.store
        self.registry = parts.registry
        self.config = parts.config
        self._workers: list[Worker] = []
        self._thread: WorkerThread | None = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Flask:
        app = self._app()
        if app is None:  # pragma: no cover - a caller holds the app
            raise RuntimeError("The app of this queue runtime is gone.")
        return app

    def make_worker(self, **kwargs: t.Any) -> Worker:
        """A new worker for the app, not registered for wake-ups."""
        return Worker(self.app, self.parts, **kwargs)

    def worker(
        self, *, concurrency: int | None = None, queues: Sequence[str] | None = None
    ) -> Worker:
        """A new worker that tasks enqueued in this process wake at once."""
        worker = self.make_worker(concurrency=concurrency, queues=queues)
        with self._lock:
            self._workers.append(worker)
        return worker

    def pauses_changed(self) -> None:
        """Make this process's workers read the pauses now."""
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.presence.refresh_pauses()
            worker.wake()

    def forget(self, worker: Worker) -> None:
        """Stop waking ``worker`` (it has stopped)."""
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)

    def wake(self) -> None:
        """Cut the idle wait of this process's workers short."""
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.wake()

    def run_eager(self, ids: Sequence[int]) -> None:
        """Run the tasks ``ids`` now, in this thread (eager mode)."""
        worker = self.make_worker()
        try:
            for task_id in ids:
                worker.run_task(task_id)
        finally:
            worker.close()

    def drain(self, tasks: Sequence[str] | None = None) -> int:
        """Run every due task (of the names ``tasks``), batch by batch, until
        none is due."""
        worker = self.make_worker(tasks=tasks)
        try:
            return worker.drain()
        finally:
            worker.close()

    @property
    def embedded(self) -> WorkerThread | None:
        """The embedded worker's thread, while it runs."""
        return self._thread

    def start_embedded(self) -> WorkerThread:
        """Start the embedded worker unless it runs already; return its thread.

        :raises ConfigurationError: the pool is too small for the concurrency.
        """
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self._thread
            worker = self.make_worker(kind="embedded")
            worker.check_pool()
            self._workers.append(worker)
            thread = self._thread = WorkerThread(worker)
            thread.start()
        me = weakref.ref(self)

        def stop_at_exit() -> None:
            runtime = me()
            if runtime is not None:
                runtime.stop_embedded(None)

        at_exit(stop_at_exit)
        return thread

    def stop_embedded(self, timeout: float | None) -> bool:
        """Stop the embedded worker (see :meth:`PlainQueue.stop_worker`)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return True
        stopped = thread.stop(
            self.config.shutdown_grace if timeout is None else timeout
        )
        self.forget(thread.worker)
        return stopped
