"""The operations half of :class:`~flask_plainqueue.PlainQueue`'s public API:
the workers, a health check, why a task waits, pausing, and the history of
finished attempts. ``flask queue`` and the dashboard use only these."""

from __future__ import annotations

import datetime
import typing as t
from collections.abc import Sequence

from . import diagnosis
from . import history
from . import validate
from .exceptions import InvalidArgument
from .info import Health
from .info import Paused
from .info import Reason
from .info import WorkerInfo
from .roster import Roster
from .stats import Stats
from .stats import StatsCounts
from .stats import StatsMinute
from .task_options import MAX_QUEUE_LENGTH

if t.TYPE_CHECKING:
    from flask import Flask

    from .config import QueueConfig
    from .runtime import AppRuntime
    from .store import Store

#: The longest period :meth:`QueueOperations.stats` reads (seconds): a year.
MAX_SINCE = 366 * 86400.0


class QueueOperations:
    """Seeing and steering the workers, mixed into
    :class:`~flask_plainqueue.PlainQueue`. Each method works on the current
    app's queue and needs an app context."""

    if t.TYPE_CHECKING:
        # Provided by PlainQueue.
        def store(self, app: Flask | None = None) -> Store: ...

        def settings(self, app: Flask | None = None) -> QueueConfig: ...

        def _state(self, app: Flask | None = None) -> AppRuntime: ...

    def workers(self) -> list[WorkerInfo]:
        """The registered workers, oldest first, each ``running``, ``stopping``
        or ``lost`` (no heartbeat for ``PLAINQUEUE_WORKER_TIMEOUT`` seconds),
        with the tasks it runs now.

        .. versionadded:: 0.1
        """
        return diagnosis.workers(self.store(), self.settings())

    def health(
        self, *, max_age: float | None = None, queues: Sequence[str] | None = None
    ) -> Health:
        """Whether a live worker serves each of ``queues`` (without ``queues``:
        whether any worker is alive) and, with ``max_age``, whether the oldest
        due task that is not paused has waited less than ``max_age`` seconds.
        For an app's own ``/healthz`` view; ``flask queue health`` prints it.

        .. versionadded:: 0.1
        """
        if max_age is not None:
            max_age = validate.seconds("max_age", max_age, error=InvalidArgument)
        names = _names("queues", queues, MAX_QUEUE_LENGTH)
        return diagnosis.health(
            self.store(), self.settings(), max_age=max_age, queues=names
        )

    def why(self, task_id: int) -> Reason:
        """Why task ``task_id`` is not running now, as one reason code and a
        sentence (see :data:`~flask_plainqueue.info.REASON_CODES`).

        .. versionadded:: 0.1
        """
        key = validate.whole(
            "task_id", task_id, error=InvalidArgument, minimum=1, maximum=2**63 - 1
        )
        return diagnosis.why(self.store(), self.settings(), key)

    def pause(self, *, queue: str | None = None, task: str | None = None) -> bool:
        """Pause a queue, a task name, or both: every worker stops claiming
        them within one poll interval (tasks already running finish), and
        periodic ticks of a paused task are not enqueued. Persisted until
        :meth:`resume`. Returns whether anything was newly paused.

        .. versionadded:: 0.1
        """
        return self._set_pause(queue, task, pause=True)

    def resume(self, *, queue: str | None = None, task: str | None = None) -> bool:
        """Undo :meth:`pause` for a queue, a task name, or both. Returns whether
        anything was paused.

        .. versionadded:: 0.1
        """
        return self._set_pause(queue, task, pause=False)

    def paused(self) -> Paused:
        """The paused queues and task names (``.queues``, ``.tasks``).

        .. versionadded:: 0.1
        """
        return Roster(self.store()).paused()

    def stats(
        self, since: float | datetime.timedelta = 3600.0, name: str | None = None
    ) -> Stats:
        """The finished attempts (succeeded, failed, dead, run time) per task
        name and minute over the last ``since`` seconds (or timedelta), of
        every task or of task ``name``, from the stats table the workers
        write every few seconds (see :ref:`history`).

        .. versionadded:: 0.1
        """
        seconds = validate.seconds(
            "since", since, error=InvalidArgument, positive=True, maximum=MAX_SINCE
        )
        if name is not None:
            name = validate.text("name", name, error=InvalidArgument)
        store = self.store()
        until = store.clock()
        start = (until - datetime.timedelta(seconds=seconds)).replace(
            second=0, microsecond=0
        )
        rows = history.read(store, start, name)
        return Stats(
            since=start,
            until=until,
            minutes=tuple(
                StatsMinute(
                    row.minute,
                    StatsCounts(
                        row.name, row.succeeded, row.failed, row.dead, row.run_seconds
                    ),
                )
                for row in rows
                if row.minute <= until
            ),
        )

    def _set_pause(self, queue: str | None, task: str | None, *, pause: bool) -> bool:
        targets = []
        if queue is not None:
            targets.append(
                (
                    "queue",
                    validate.text(
                        "queue",
                        queue,
                        error=InvalidArgument,
                        max_length=MAX_QUEUE_LENGTH,
                    ),
                )
            )
        if task is not None:
            targets.append(("task", validate.text("task", task, error=InvalidArgument)))
        if not targets:
            raise InvalidArgument(
                f"{'pause' if pause else 'resume'}() needs queue=..., task=... or both."
            )
        store = self.store()
        roster = Roster(store)
        now = store.clock()
        changed = False
        for kind, name in targets:
            if pause:
                changed = roster.pause(kind, name, now) or changed
            else:
                changed = roster.resume(kind, name) or changed
        # This process's workers obey at once; others within a poll interval.
        self._state().pauses_changed()
        return changed


def _names(param: str, values: Sequence[str] | None, max_length: int) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [
        validate.text(param, v, error=InvalidArgument, max_length=max_length)
        for v in values
    ]
