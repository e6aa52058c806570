"""The worker's task threads: a small pool of daemon threads that runs one batch
at a time."""

from __future__ import annotations

import queue
import threading
import typing as t
from collections.abc import Callable
from collections.abc import Sequence

R = t.TypeVar("R")


class Batch(t.Generic[R]):
    """The calls of one batch: which have finished, and their results.

    One event for the whole batch, instead of a future per call: the worker only
    needs to know when all are done (or which are not, when it stops waiting).
    """

    def __init__(self, size: int) -> None:
        self._results: list[R | None] = [None] * size
        self._errors: list[BaseException | None] = [None] * size
        self._finished = [False] * size
        self._left = size
        self._lock = threading.Lock()
        self._done = threading.Event()
        if not size:
            self._done.set()

    def _finish(
        self, index: int, result: R | None, error: BaseException | None
    ) -> None:
        self._results[index] = result
        self._errors[index] = error
        with self._lock:
            self._finished[index] = True
            self._left -= 1
            if not self._left:
                self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for every call; return whether all ended."""
        return self._done.wait(timeout)

    def finished(self) -> list[int]:
        """Indexes of the calls that have ended."""
        with self._lock:
            return [i for i, done in enumerate(self._finished) if done]

    def result(self, index: int) -> R:
        """The result of an ended call (its exception is raised here)."""
        error = self._errors[index]
        if error is not None:
            raise error
        return t.cast(R, self._results[index])


_Item = tuple[Batch[t.Any], int, Callable[..., t.Any], tuple[t.Any, ...]] | None


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
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut = False

    def run_batch(
        self, fn: Callable[..., R], calls: Sequence[tuple[t.Any, ...]]
    ) -> Batch[R]:
        """Start ``fn(*args)`` for each ``args`` of ``calls`` at once, each on a
        thread of its own (up to the pool's size)."""
        if self._shut:
            raise RuntimeError("the task pool is shut down")
        batch: Batch[R] = Batch(len(calls))
        for index, args in enumerate(calls):
            self._queue.put((batch, index, fn, args))
            # Reuse an idle thread if there is one, else start another.
            if not self._idle.acquire(blocking=False):
                self._grow()
        return batch

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
            batch, index, fn, args = item
            try:
                result = fn(*args)
            except BaseException as exc:
                batch._finish(index, None, exc)
            else:
                batch._finish(index, result, None)
            del item, batch, fn, args
            self._idle.release()

    def shutdown(self) -> None:
        """Let idle threads end; busy ones end when their call returns."""
        self._shut = True
        with self._lock:
            count = len(self._threads)
        for _ in range(count):
            self._queue.put(None)
