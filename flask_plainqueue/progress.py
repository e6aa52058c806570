"""Writing a running task's progress (``current_task.report_progress``),
coalesced so that a task reporting in a tight loop costs a few writes per
second, each a short transaction of its own."""

from __future__ import annotations

import logging
import threading
import time
import typing as t

from .enqueue import to_json
from .exceptions import InvalidArgument

if t.TYPE_CHECKING:
    from .claims import ClaimedTask
    from .store import Store

logger = logging.getLogger("flask_plainqueue.worker")

#: At most one progress write per task per this many seconds. The first value
#: is written at once; a value reported sooner after a write is held and
#: written when the interval has passed (by a timer, so it is written even if
#: the task reports nothing more), a newer value replacing it. Whatever is
#: still held when the attempt ends is written with its outcome.
PROGRESS_INTERVAL = 0.5


class ProgressWriter:
    """The progress of one attempt.

    :param store: writes the value, fenced by ``owner`` and the attempt, so a
        worker that lost the task cannot overwrite it.
    :param deferred: hold every value until the attempt ends: an atomic task on
        SQLite holds the database's write lock while it runs, so no other
        transaction could write before it ends.
    """

    def __init__(
        self, store: Store, owner: str, task: ClaimedTask, *, deferred: bool
    ) -> None:
        self._store = store
        self._owner = owner
        self._task = task
        self._deferred = deferred
        self._lock = threading.Lock()
        # Held through each write, so close() can wait for one in flight: a
        # held value written later must never be overwritten by an older one.
        self._writing = threading.Lock()
        self._pending: str | None = None
        self._last = -PROGRESS_INTERVAL
        self._timer: threading.Timer | None = None
        self._closed = False

    def report(self, value: object) -> None:
        """Write ``value`` now, or hold it (see :data:`PROGRESS_INTERVAL`)."""
        try:
            text = to_json(value)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidArgument(
                "report_progress() takes a JSON value (dicts with string keys,"
                f" lists, strings, numbers, booleans, None), got a"
                f" {type(value).__name__}: {exc}"
            ) from exc
        with self._lock:
            if self._closed:
                return  # a timed-out thread that runs on: its outcome is written
            self._pending = text
            if self._deferred:
                return
            wait = self._last + PROGRESS_INTERVAL - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._write_held)
                    self._timer.daemon = True
                    self._timer.name = "plainqueue-progress"
                    self._timer.start()
                return
            self._pending = None
            self._last = time.monotonic()
        self._write(text)

    def _write_held(self) -> None:
        with self._lock:
            self._timer = None
            text, self._pending = self._pending, None
            if text is None or self._closed:
                return
            self._last = time.monotonic()
        self._write(text)

    def _write(self, text: str) -> None:
        try:
            with self._writing:
                self._store.write_progress(self._owner, self._task, text)
        except Exception:
            # Progress is advisory: a failed write must not fail the task.
            logger.warning(
                "Task %s (%s): could not write its progress",
                self._task.id,
                self._task.name,
                exc_info=True,
                extra={"task_id": self._task.id, "task": self._task.name},
            )

    def close(self) -> str | None:
        """Stop writing; return the held value, not yet written, for the
        outcome's transaction."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
            text, self._pending = self._pending, None
        if timer is not None:
            timer.cancel()
        with self._writing:
            pass
        return text

    def flush_and_close(self) -> None:
        """Stop writing; write the held value first."""
        text = self.close()
        if text is not None:
            self._write(text)
