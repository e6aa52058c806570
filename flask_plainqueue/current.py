"""``current_task``: the task being run, inside its body and its callbacks.

A context variable holds it, so it is right on a pool thread (a sync task)
and in the coroutine of an async task on the event loop alike: each attempt
sets it where its code runs, and resets it afterwards.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import typing as t
from collections.abc import Callable
from collections.abc import Iterator


class ProgressSink(t.Protocol):
    """Where :meth:`CurrentTask.report_progress` sends values (the attempt's
    :class:`~flask_plainqueue.progress.ProgressWriter`)."""

    def report(self, value: object) -> None: ...

    def close(self) -> str | None: ...

    def flush_and_close(self) -> None: ...


class TaskContext:
    """What :data:`current_task` knows of one attempt.

    :param open_sink: makes the attempt's progress writer, on its first
        report: most tasks never report, and an attempt must stay cheap.
    """

    __slots__ = ("id", "name", "attempt", "will_retry", "_open_sink", "sink")

    def __init__(
        self,
        id: int,
        name: str,
        attempt: int,
        open_sink: Callable[[], ProgressSink],
    ) -> None:
        self.id = id
        self.name = name
        self.attempt = attempt
        #: Set for a failure callback: whether another attempt follows.
        self.will_retry = False
        self._open_sink = open_sink
        #: The progress writer, once the task reported something.
        self.sink: ProgressSink | None = None

    @property
    def progress(self) -> ProgressSink:
        """The attempt's progress writer, made on first use."""
        if self.sink is None:
            with _opening:
                if self.sink is None:
                    self.sink = self._open_sink()
        return self.sink


_opening = threading.Lock()
_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "plainqueue_current_task", default=None
)
#: Make a context the current task: ``token = enter(context)``, later
#: ``leave(token)`` (cheaper than a ``with`` block on every attempt).
enter = _current.set
leave = _current.reset


@contextlib.contextmanager
def running(context: TaskContext) -> Iterator[TaskContext]:
    """Make ``context`` the current task in this thread (or coroutine)."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def get() -> TaskContext | None:
    """The current task's context, or ``None`` outside a task."""
    return _current.get()


class CurrentTask:
    """The task being run, as ``from flask_plainqueue import current_task``
    gives it: valid inside a task's body and its success and failure callbacks.

    :raises RuntimeError: on any attribute, outside a task.

    .. versionadded:: 0.1
    """

    def _context(self) -> TaskContext:
        context = _current.get()
        if context is None:
            raise RuntimeError(
                "current_task is only available while a worker runs a task (in the"
                " task function or its success or failure callback); it was used"
                " outside one."
            )
        return context

    @property
    def id(self) -> int:
        """The task's id, as ``perform`` returned it."""
        return self._context().id

    @property
    def name(self) -> str:
        """The task's name."""
        return self._context().name

    @property
    def attempt(self) -> int:
        """Which attempt this is, from 1 (every claim counts, a
        :class:`~flask_plainqueue.Retry` included)."""
        return self._context().attempt

    @property
    def will_retry(self) -> bool:
        """In a failure callback, whether another attempt follows (``False``
        once the task is dead); ``False`` in the body and success callback."""
        return self._context().will_retry

    def report_progress(self, value: object) -> None:
        """Store ``value`` (any JSON value) as the task's progress, shown by
        :meth:`~flask_plainqueue.PlainQueue.get` as ``TaskInfo.progress``.

        Calls are coalesced: see :data:`~flask_plainqueue.progress.PROGRESS_INTERVAL`.

        :raises InvalidArgument: ``value`` is not JSON-serialisable.
        """
        self._context().progress.report(value)

    def __repr__(self) -> str:
        context = _current.get()
        if context is None:
            return "<current_task: no task running>"
        return f"<current_task {context.id} {context.name!r} attempt {context.attempt}>"


#: The task being run: see :class:`CurrentTask`.
current_task = CurrentTask()
