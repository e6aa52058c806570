"""Enqueueing, mixed into :class:`~flask_plainqueue.PlainQueue`:
``perform`` and ``perform_many``, typed against the task's function, and what
follows a commit (waking workers, or running the task in eager mode)."""

from __future__ import annotations

import datetime
import typing as t
from collections.abc import Iterable
from collections.abc import Mapping

from flask import current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

from . import signals
from . import validate
from .enqueue import build_row
from .enqueue import JOIN_SESSION
from .enqueue import TaskId
from .exceptions import InvalidArgument
from .tasks import JSONValue
from .tasks import TaskDefinition
from .typed import D
from .typed import DataFor
from .typed import ItemsFor
from .typed import PerformArgs
from .typed import PerformManyArgs
from .typed import TakesData
from .typed import TakesNoData

if t.TYPE_CHECKING:
    import weakref

    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy
    from typing_extensions import Unpack

    # Type-only back edges: PlainQueue (extension) holds the per-app runtimes.
    from .runtime import AppRuntime
    from .tasks import TaskRegistry

_SESSION_KEY = "plainqueue_after_commit"


class Enqueueing:
    """``perform`` and ``perform_many``, mixed into
    :class:`~flask_plainqueue.PlainQueue`."""

    db: SQLAlchemy | None
    registry: TaskRegistry

    if t.TYPE_CHECKING:
        # Provided by PlainQueue.
        _apps: weakref.WeakKeyDictionary[Flask, AppRuntime]

        def _state(self, app: Flask | None = None) -> AppRuntime: ...

    @t.overload
    def perform(
        self, task: TakesData[D], data: DataFor[D], **options: Unpack[PerformArgs]
    ) -> TaskId: ...

    @t.overload
    def perform(
        self,
        task: TakesData[None] | TakesNoData,
        data: None = None,
        **options: Unpack[PerformArgs],
    ) -> TaskId: ...

    @t.overload
    def perform(
        self, task: str, data: JSONValue = None, **options: Unpack[PerformArgs]
    ) -> TaskId: ...

    def perform(
        self,
        task: TakesData[t.Any] | TakesNoData | str,
        data: object = None,
        **options: Unpack[PerformArgs],
    ) -> TaskId:
        """Store a task for a worker to run and return its id.

        The row goes through the app's ``db.session``. With ``commit=True`` (the
        default) the session is committed, so the task is durable when this
        returns. With ``commit=False`` it is only flushed into the session's
        transaction: it is enqueued when the caller commits and vanishes if the
        caller rolls back. Every argument is checked before anything is written,
        and a bad one leaves the caller's pending work alone.

        :param task: a task definition (or its registered name).
        :type task: TaskDefinition | str
        :param data: one JSON value (string keys only), passed to the function.
            Type checkers check it against the function's parameter type (not
            for a name); see :ref:`type-checking`.
        :type data: JSONValue
        :param commit: commit the session (default) or join its transaction.
        :param delay: run no sooner than this many seconds from now.
        :param run_at: run no sooner than this timezone-aware datetime.
        :param priority: higher is claimed first; default the task's priority.
        :param unique_key: while a task of this name with this key waits or runs,
            return its id (with ``.new`` false) instead of storing another.
        :returns: the task's id, an ``int`` with ``.new`` telling whether a row
            was inserted.
        :raises TaskDataError: ``data`` is not a JSON value (a ``TypeError``).
        :raises InvalidArgument: another argument is out of range; the message
            names it (a ``TypeError`` and a ``ValueError``).
        :raises RuntimeError: no app context, or the app is not registered.
        """
        unknown = set(options) - set(PerformArgs.__annotations__)
        if unknown:
            raise InvalidArgument(
                f"perform() got unknown argument(s): {', '.join(sorted(unknown))}."
            )
        session = self._session()
        # Inside an atomic task or a success callback, join its transaction.
        commit = validate.flag(
            "commit", options.get("commit", True), error=InvalidArgument
        )
        commit = commit and not session.info.get(JOIN_SESSION)
        unique_key = options.get("unique_key")
        definition = self._definition(task)
        state = self._state()
        row = build_row(
            definition,
            data,
            options.get("delay"),
            options.get("run_at"),
            options.get("priority"),
            unique_key,
            now=state.store.clock(),
        )
        if unique_key is None:
            (task_id,) = state.store.perform(session, [row], commit=commit)
            new = True
        else:
            task_id, new = state.store.perform_unique(session, row, commit=commit)
        if new:
            self._enqueued(state, session, [task_id], definition.name, commit, row)
        return TaskId(task_id, new=new)

    @t.overload
    def perform_many(
        self,
        task: TakesData[D],
        items: ItemsFor[D],
        **options: Unpack[PerformManyArgs],
    ) -> list[int]: ...

    @t.overload
    def perform_many(
        self,
        task: TakesNoData | str,
        items: Iterable[JSONValue],
        **options: Unpack[PerformManyArgs],
    ) -> list[int]: ...

    def perform_many(
        self,
        task: TakesData[t.Any] | TakesNoData | str,
        items: Iterable[object],
        *,
        commit: bool = True,
        delay: float | datetime.timedelta | None = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
    ) -> list[int]:
        """Store one task per item of ``items`` in one transaction and one
        round trip; return their ids in order. Every item is checked before
        anything is written.

        Type checkers check each item as ``perform`` checks ``data``.

        :type task: TaskDefinition | str
        :type items: Iterable[JSONValue]
        :raises TaskDataError: an item is not a JSON value (nothing is written).
        """
        if isinstance(items, (str, bytes, Mapping)):
            raise InvalidArgument(
                "perform_many() takes an iterable of data values (one per task) as"
                f" items, got a {type(items).__name__}; use perform() for one task."
            )
        commit = validate.flag("commit", commit, error=InvalidArgument)
        definition = self._definition(task)
        state = self._state()
        now = state.store.clock()
        rows = [
            build_row(definition, item, delay, run_at, priority, None, now=now)
            for item in items
        ]
        if not rows:
            return []
        session = self._session()
        commit = commit and not session.info.get(JOIN_SESSION)
        ids = state.store.perform(session, rows, commit=commit)
        self._enqueued(state, session, ids, definition.name, commit, rows[0])
        return ids

    def _session(self) -> Session:
        return t.cast("SQLAlchemy", self.db).session()

    def _definition(
        self, task: TakesData[t.Any] | TakesNoData | str
    ) -> TaskDefinition[t.Any, t.Any]:
        if isinstance(task, str):
            return self.registry.get(task)
        if not isinstance(task, TaskDefinition):
            raise InvalidArgument(
                f"perform() takes as task a task definition (a function decorated with"
                f" @queue.task) or its name, got {task!r}."
            )
        if task.name not in self.registry or self.registry.get(task.name) is not task:
            raise RuntimeError(
                f"Task {task.name!r} is registered with another PlainQueue instance."
            )
        return task

    def _enqueued(
        self,
        state: AppRuntime,
        session: Session,
        ids: list[int],
        name: str,
        committed: bool,
        row: dict[str, t.Any],
    ) -> None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        for task_id in ids:
            signals.send(signals.task_enqueued, app, task_id=task_id, task=name)
        # Eager mode runs what is due now; a delayed task waits, as in a worker.
        due = row["run_at"] <= row["created"]
        if committed:
            self._after_enqueue(app, state, ids, due)
        else:
            pending = session.info.setdefault(_SESSION_KEY, [])
            pending.append((app, ids, due))

    def _after_enqueue(
        self, app: Flask, state: AppRuntime, ids: list[int], due: bool
    ) -> None:
        if state.config.eager:
            if due:
                state.run_eager(ids)
            return
        state.wake()

    def _listen_for_commits(self, db: SQLAlchemy) -> None:
        factory = db.session.session_factory
        if event.contains(factory, "after_commit", self._on_commit):
            return
        event.listen(factory, "after_commit", self._on_commit)
        event.listen(factory, "after_rollback", self._on_rollback)

    def _on_commit(self, session: Session) -> None:
        pending = session.info.pop(_SESSION_KEY, None)
        for app, ids, due in pending or ():
            state = self._apps.get(app)
            if state is not None:
                self._after_enqueue(app, state, ids, due)

    def _on_rollback(self, session: Session) -> None:
        session.info.pop(_SESSION_KEY, None)
