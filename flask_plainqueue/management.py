"""The read/admin half of :class:`~flask_plainqueue.PlainQueue`'s public API:
looking up, counting, retrying, deleting, purging, exporting and importing
stored tasks. ``flask queue`` and the dashboard use only these."""

from __future__ import annotations

import dataclasses
import datetime
import time
import typing as t
from collections.abc import Collection
from collections.abc import Iterable

import sqlalchemy as sa

from . import admin
from . import transfer
from . import validate
from .exceptions import InvalidArgument
from .exceptions import ScheduleError
from .info import format_age
from .info import Paused
from .info import PeriodicInfo
from .info import QueueStatus
from .info import TaskInfo
from .roster import Roster
from .schema import TaskState

if t.TYPE_CHECKING:
    from flask import Flask

    from .config import QueueConfig
    from .store import Store
    from .tasks import TaskRegistry


#: The longest pause between two looks at the task in :meth:`QueueManagement.wait`.
WAIT_MAX_INTERVAL = 0.5
_FINISHED = (TaskState.SUCCEEDED, TaskState.DEAD)


class QueueManagement:
    """Reading and administering stored tasks, mixed into
    :class:`~flask_plainqueue.PlainQueue`. Each method works on the current
    app's queue and needs an app context."""

    registry: TaskRegistry

    if t.TYPE_CHECKING:
        # Provided by PlainQueue.
        def store(self, app: Flask | None = None) -> Store: ...

        def settings(self, app: Flask | None = None) -> QueueConfig: ...

        def wake_workers(self, app: Flask | None = None) -> None: ...

    def get(self, task_id: int) -> TaskInfo | None:
        """The stored task ``task_id``, or ``None`` (finished, deleted, or never
        there).

        .. versionadded:: 0.1
        """
        info = admin.get_task(self.store(), _checked_id(task_id))
        if info is None:
            return None
        return _marked([info], self._pauses())[0]

    def wait(
        self, task_id: int, *, timeout: float | datetime.timedelta | None = None
    ) -> TaskInfo | None:
        """Block until task ``task_id`` has succeeded or is dead and return it;
        ``None`` if it is not stored (it succeeded and was not kept, was
        deleted or pruned, or never existed). A worker must run it meanwhile:
        this only watches, polling the database (every 10 ms at first, backing
        off to every :data:`WAIT_MAX_INTERVAL` seconds). For scripts and tests.

        :param timeout: seconds (or a timedelta) to wait at most; ``None``
            waits as long as it takes.
        :raises TimeoutError: the task is still waiting or running after
            ``timeout``.
        :raises InvalidArgument: ``timeout`` is not a number of seconds from 0.

        .. versionadded:: 0.1
        """
        key = _checked_id(task_id)
        limit = (
            None
            if timeout is None
            else validate.seconds("timeout", timeout, error=InvalidArgument)
        )
        store = self.store()
        deadline = None if limit is None else time.monotonic() + limit
        interval = 0.01
        while True:
            info = admin.get_task(store, key)
            if info is None or info.state in _FINISHED:
                return info
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(
                    f"Task {key} ({info.name}) is still {info.state.value} after"
                    f" {limit:g}s."
                )
            time.sleep(interval if left is None else min(interval, left))
            interval = min(interval * 2, WAIT_MAX_INTERVAL)

    def tasks(
        self,
        *,
        state: TaskState | Collection[TaskState] | None = None,
        name: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[TaskInfo]:
        """Stored tasks in ``state`` (one or several; default all), of task
        ``name`` and ``queue`` (default all). Dead tasks come newest failure
        first, others in claim order. A pending task held by a pause has
        :attr:`TaskInfo.paused <flask_plainqueue.TaskInfo.paused>` set.

        .. versionadded:: 0.1
        """
        found = admin.list_tasks(
            self.store(),
            states=_states(state),
            name=name,
            queue=queue,
            limit=limit,
            offset=offset,
        )
        return _marked(found, self._pauses()) if found else found

    def count(
        self,
        *,
        state: TaskState | Collection[TaskState] | None = None,
        name: str | None = None,
        queue: str | None = None,
    ) -> int:
        """How many tasks :meth:`tasks` would list without a limit.

        .. versionadded:: 0.1
        """
        return admin.count_tasks(
            self.store(), states=_states(state), name=name, queue=queue
        )

    def counts(self) -> dict[str, dict[TaskState, int]]:
        """``{task name: {state: count}}`` over the stored tasks.

        .. versionadded:: 0.1
        """
        return self.status().counts

    def status(self, *, queue: str | None = None) -> QueueStatus:
        """Counts per task name, queue and state, the oldest due task, and the
        workers running tasks now; of ``queue`` only if given. Its
        :attr:`~flask_plainqueue.QueueStatus.paused` holds every paused queue
        and task name.

        .. versionadded:: 0.1
        """
        result = admin.status(self.store(), queue=queue)
        return dataclasses.replace(result, paused=self._pauses())

    def periodic_tasks(self) -> list[PeriodicInfo]:
        """The registered periodic tasks, sorted by name, each with its
        schedule, the last tick a worker enqueued and the next tick, and
        whether it is paused (its name or its queue).

        .. versionadded:: 0.1
        """
        store = self.store()
        ticks = admin.last_ticks(store)
        paused = self._pauses()
        now = store.clock()
        result = []
        for definition in sorted(self.registry, key=lambda d: d.name):
            schedule = definition.schedule
            if schedule is None:
                continue
            try:
                upcoming: datetime.datetime | None = schedule.next(now)
            except ScheduleError:
                upcoming = None
            every = None if schedule.every is None else schedule.every.total_seconds()
            result.append(
                PeriodicInfo(
                    name=definition.name,
                    queue=definition.options.queue,
                    schedule=schedule.cron
                    if schedule.cron is not None
                    else f"every {format_age(t.cast(float, every))}",
                    cron=schedule.cron,
                    every=every,
                    tz=schedule.tz,
                    catch_up=definition.catch_up,
                    last_tick=ticks.get(definition.name),
                    next_tick=upcoming,
                    paused=paused.holds(definition.name, definition.options.queue),
                )
            )
        return result

    def _pauses(self) -> Paused:
        store = self.store()
        try:
            return Roster(store).paused()
        except sa.exc.DBAPIError as exc:
            # An app upgraded without its migration has no pauses table; its
            # workers ignore pauses, so nothing is paused.
            if store.is_missing_table(exc):
                return Paused()
            raise

    def tables_exist(self) -> bool:
        """Whether the queue's tables exist in the current app's database
        (``db.create_all()`` or a migration creates them).

        .. versionadded:: 0.1
        """
        return admin.tables_exist(self.store())

    def names(self) -> list[str]:
        """The task names stored, sorted.

        .. versionadded:: 0.1
        """
        return admin.task_names(self.store())

    def retry(self, task_id: int) -> bool:
        """Make a dead or waiting task due now, with its failure count reset, so
        it gets ``max_retries`` fresh retries.

        :returns: ``False`` if it is running or gone.
        :raises UniqueTaskWaiting: it has a ``unique_key`` that another
            waiting task holds.
        :raises RuntimeError: no app context.

        .. versionadded:: 0.1
        """
        if not admin.retry_one(self.store(), _checked_id(task_id)):
            return False
        self.wake_workers()
        return True

    def retry_failed(self, *, name: str | None = None) -> list[int]:
        """Retry every dead task (of task ``name``); return the ids retried.

        .. versionadded:: 0.1
        """
        retried = admin.retry_dead(self.store(), name=name)
        if retried:
            self.wake_workers()
        return retried

    def cancel(self, task_id: int) -> bool:
        """Remove a task that is not running (pending, scheduled, succeeded or
        dead).

        :returns: ``False`` if it is running (its worker owns it) or gone.
        :raises RuntimeError: no app context.

        .. versionadded:: 0.1
        """
        return bool(admin.delete(self.store(), [_checked_id(task_id)]))

    delete = cancel

    def delete_tasks(
        self,
        *,
        state: TaskState | Collection[TaskState] | None = None,
        name: str | None = None,
        queue: str | None = None,
        dry_run: bool = False,
    ) -> int:
        """Delete the tasks in ``state`` (default the waiting ones: pending and
        scheduled; ``succeeded`` and ``dead`` may be given too) of task ``name``
        and ``queue``
        (default all), in batches of 1,000 rows per transaction; return how
        many were deleted, or with ``dry_run`` how many would be. A task that
        is running when its batch is deleted is left alone.

        :raises InvalidArgument: ``state`` includes ``running``.

        .. versionadded:: 0.1
        """
        states = _states(state) or [TaskState.PENDING, TaskState.SCHEDULED]
        if TaskState.RUNNING in states:
            raise InvalidArgument(
                "delete_tasks() deletes pending, scheduled, succeeded and dead tasks;"
                " a running"
                " task belongs to its worker, so state may not include 'running'."
            )
        return admin.delete_matching(
            self.store(), states=states, name=name, queue=queue, dry_run=dry_run
        )

    def purge(
        self,
        *,
        older_than: float | datetime.timedelta | None = None,
        name: str | None = None,
        dry_run: bool = False,
    ) -> int:
        """Delete dead tasks (of task ``name``) whose last failure is more than
        ``older_than`` seconds ago (all dead tasks if ``None``); return how many
        were deleted, or with ``dry_run`` how many would be.

        .. versionadded:: 0.1
        """
        if isinstance(older_than, datetime.timedelta):
            older_than = older_than.total_seconds()
        store = self.store()
        return admin.purge_dead(
            store, older_than=older_than, name=name, dry_run=dry_run
        )

    def prune(self) -> int:
        """Delete dead tasks older than ``PLAINQUEUE_KEEP_FAILED`` and succeeded
        tasks past their ``keep_succeeded`` now (the worker also does it about
        once a minute); return how many were deleted."""
        store = self.store()
        keep = self.settings().keep_failed
        dead = 0 if keep is None else admin.purge_dead(store, older_than=keep)
        return dead + admin.prune_succeeded(store)

    def export_tasks(
        self, out: t.TextIO, *, include_dead: bool = False
    ) -> transfer.ExportResult:
        """Write the waiting tasks (and with ``include_dead`` dead ones) to
        ``out`` as JSON Lines, for :meth:`import_tasks` elsewhere.

        .. versionadded:: 0.1
        """
        return transfer.export_tasks(self.store(), out, include_dead=include_dead)

    def import_tasks(self, lines: Iterable[str]) -> transfer.ImportResult:
        """Store the tasks of an export in one transaction of their own (all or,
        on an error, none), with new ids.

        :raises TransferError: a line is not a valid task; nothing was stored.

        .. versionadded:: 0.1
        """
        result = transfer.import_tasks(
            self.store(), lines, known_names=self.registry.names()
        )
        self.wake_workers()
        return result


def _marked(infos: list[TaskInfo], paused: Paused) -> list[TaskInfo]:
    """``infos`` with :attr:`TaskInfo.paused` set on the pending ones a pause
    holds (like ``why``, a task counts as paused once it is due)."""
    if not paused:
        return infos
    return [
        dataclasses.replace(info, paused=True)
        if info.state is TaskState.PENDING and paused.holds(info.name, info.queue)
        else info
        for info in infos
    ]


def _checked_id(task_id: object) -> int:
    # An id of the wrong type is a bug in the caller (a str from a URL, say);
    # an int that no row can have is simply "not there".
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise InvalidArgument(
            f"task_id must be an int, the id perform() returned; got {task_id!r}."
            " Parse a text id with int() first."
        )
    return task_id


def _states(
    state: TaskState | Collection[TaskState] | None,
) -> Collection[TaskState] | None:
    if state is None:
        return None
    if isinstance(state, TaskState | str):
        return [TaskState(state)]
    return [TaskState(s) for s in state]
