"""The worker's task threads: a small pool of daemon threads that runs one batch
at a time."""

from __future__ import annotations

import collections
import queue
import threading
import typing as t
from collections.abc import Callable
from collections.abc import Sequence

R = t.TypeVar("R")


class Batch(t.Generic[R]):
    """The calls of one batch: which have started and finished, and their results.

    One event for the whole batch, instead of a future per call: the worker only
    needs to know when all are done (or which are not, when it stops waiting).
    Calls wait in the batch, not in the pool's queue, so whichever thread is
    free takes the next one: a pool thread, or the thread that claimed the
    batch (see :meth:`run_pending`).
    """

    def __init__(
        self,
        fn: Callable[..., R],
        calls: Sequence[tuple[t.Any, ...]],
        *,
        chained: bool = False,
    ) -> None:
        size = len(calls)
        self._fn = fn
        #: Threads are woken one at a time (see :class:`TaskPool`).
        self.chained = chained
        self._pending: collections.deque[tuple[int, tuple[t.Any, ...]]] = (
            collections.deque(enumerate(calls))
        )
        self._results: list[R | None] = [None] * size
        self._errors: list[BaseException | None] = [None] * size
        self._finished = [False] * size
        self._left = size
        self._lock = threading.Lock()
        self._done = threading.Event()
        if not size:
            self._done.set()

    def _take(self) -> tuple[int, tuple[t.Any, ...]] | None:
        try:
            # deque.popleft is atomic: each call is taken exactly once.
            return self._pending.popleft()
        except IndexError:
            return None

    def _run(self, index: int, args: tuple[t.Any, ...]) -> None:
        try:
            result = self._fn(*args)
        except BaseException as exc:
            self._finish(index, None, exc)
        else:
            self._finish(index, result, None)

    def run_pending(self) -> None:
        """Run, on the calling thread, the calls no thread has taken yet, until
        none is left. Short calls then need no hand-off to another thread;
        while a call here blocks, the pool's threads take the rest."""
        while (item := self._take()) is not None:
            self._run(*item)

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


class TaskPool:
    """Runs the calls of batches on up to ``max_workers`` daemon threads,
    started as needed.

    :class:`concurrent.futures.ThreadPoolExecutor` would do, except that the
    interpreter waits for its threads at exit: a sync task that ignores the
    shutdown grace period (its row already handed back) would then keep ``flask
    run`` or a gunicorn worker from exiting. Daemon threads do not. Under
    gevent's monkey-patching the threads are greenlets.

    A batch the claiming thread helps with (``helped``) wakes threads one at
    a time: a thread that takes a call wakes the next before it runs it, so
    every call still starts as soon as a thread is free, but calls that end at
    once, which the claiming thread mostly runs itself, cost no thread switch
    each. Nothing waits on the chain alone: what no thread has taken, the
    claiming thread runs. Any other batch wakes a thread per call at once.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self._max_workers = max_workers
        self._name = name
        self._queue: queue.SimpleQueue[Batch[t.Any] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut = False

    def run_batch(
        self,
        fn: Callable[..., R],
        calls: Sequence[tuple[t.Any, ...]],
        *,
        helped: bool = False,
    ) -> Batch[R]:
        """Start ``fn(*args)`` for each ``args`` of ``calls`` at once, each on a
        thread of its own (up to the pool's size). ``helped``: the caller will
        call :meth:`Batch.run_pending`, and so may run some of them itself."""
        if self._shut:
            raise RuntimeError("the task pool is shut down")
        batch: Batch[R] = Batch(fn, calls, chained=helped)
        for _ in range(1 if helped else len(calls)):
            self._wake(batch)
        return batch

    def _wake(self, batch: Batch[t.Any]) -> None:
        self._queue.put(batch)
        # Reuse an idle thread if there is one, else start another.
        if not self._idle.acquire(blocking=False):
            self._grow()

    def _grow(self) -> None:
        with self._lock:
            # A shut pool gets no thread that no one would stop; a helped
            # batch's claiming thread runs what is left.
            if self._shut or len(self._threads) >= self._max_workers:
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
            batch = self._queue.get()
            if batch is None:
                return
            item = batch._take()
            if item is not None:
                if batch.chained and batch._pending:
                    self._wake(batch)
                batch._run(*item)
            del batch, item
            self._idle.release()

    def shutdown(self) -> None:
        """Let idle threads end; busy ones end when their call returns."""
        self._shut = True
        with self._lock:
            count = len(self._threads)
        for _ in range(count):
            self._queue.put(None)
