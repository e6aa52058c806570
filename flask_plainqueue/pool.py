"""The worker's task threads: a small pool of daemon threads."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import typing as t
from collections.abc import Callable

R = t.TypeVar("R")

_Item = (
    tuple["concurrent.futures.Future[t.Any]", Callable[..., t.Any], tuple[t.Any, ...]]
    | None
)


class TaskPool:
    """Runs callables on up to ``max_workers`` daemon threads, started as needed.

    :class:`concurrent.futures.ThreadPoolExecutor` would do, except that the
    interpreter waits for its threads at exit: a sync task that ignores the
    shutdown grace period (its row already handed back) would then keep ``flask
    run`` or a gunicorn worker from exiting. Daemon threads do not. Under
    gevent's monkey-patching the threads are greenlets.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self._max_workers = max_workers
        self._name = name
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut = False

    def submit(
        self, fn: Callable[..., R], /, *args: t.Any
    ) -> concurrent.futures.Future[R]:
        """Run ``fn(*args)`` on a pool thread; its result arrives in the future."""
        if self._shut:
            raise RuntimeError("the task pool is shut down")
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        self._queue.put((future, fn, args))
        # Reuse an idle thread if there is one, else start another (up to the max).
        if not self._idle.acquire(blocking=False):
            self._grow()
        return future

    def _grow(self) -> None:
        with self._lock:
            if len(self._threads) >= self._max_workers:
                return
            thread = threading.Thread(
                target=self._work,
                name=f"{self._name}-{len(self._threads)}",
                daemon=True,
            )
            self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)
            del item, future, fn, args
            self._idle.release()

    def shutdown(self) -> None:
        """Let idle threads end; busy ones end when their task returns. Queued
        work that has not started is cancelled."""
        self._shut = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        with self._lock:
            count = len(self._threads)
        for _ in range(count):
            self._queue.put(None)
