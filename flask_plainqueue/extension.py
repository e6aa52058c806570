"""The :class:`PlainQueue` extension: registration, task definitions, enqueueing
and the embedded worker."""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import logging
import os
import threading
import typing as t
import weakref
from collections.abc import Callable
from collections.abc import Iterable

import click
from flask import Flask
from flask import current_app
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from . import signals
from .config import QueueConfig
from .exceptions import ConfigurationError
from .exceptions import TaskDataError
from .models import TaskModel
from .models import build_periodic_table
from .models import build_task_model
from .storage import Storage
from .storage import configure_sqlite_engine
from .storage import new_row
from .tasks import FailureCallback
from .tasks import JSONValue
from .tasks import P
from .tasks import R
from .tasks import SuccessCallback
from .tasks import TaskDefinition
from .tasks import TaskOptions
from .tasks import TaskRegistry
from .tasks import default_name
from .tasks import import_task_modules
from .worker import Worker
from .worker import WorkerThread

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

logger = logging.getLogger(__name__)

UTC = datetime.timezone.utc
_SESSION_KEY = "plainqueue_after_commit"


@dataclasses.dataclass
class _AppState:
    """What the extension keeps per registered app."""

    config: QueueConfig
    storage: Storage
    workers: list[Worker] = dataclasses.field(default_factory=list)
    thread: WorkerThread | None = None
    eager_worker: Worker | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class PlainQueue:
    """A persistent task queue stored in the app's own database.

    .. code-block:: python

        db = SQLAlchemy()
        queue = PlainQueue(db=db)

        def create_app():
            app = Flask(__name__)
            db.init_app(app)
            queue.init_app(app)
            return app

    :param app: register with this app now (otherwise call :meth:`init_app`).
    :param db: the app's Flask-SQLAlchemy instance; may be omitted when the app
        has exactly one.
    :param table: the queue table's name; default ``PLAINQUEUE_TABLE``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Flask | None = None,
        db: SQLAlchemy | None = None,
        *,
        table: str | None = None,
    ) -> None:
        #: The Flask-SQLAlchemy instance whose metadata holds the queue table.
        self.db = db
        #: The registered task definitions.
        self.registry = TaskRegistry()
        self._table = table
        self._model: type[TaskModel] | None = None
        self._apps: weakref.WeakKeyDictionary[Flask, _AppState] = (
            weakref.WeakKeyDictionary()
        )
        self._dashboard_auth: Callable[[], bool] | None = None
        self._periodic: sa.Table | None = None
        if db is not None and table is not None:
            self._model = build_task_model(db, table)
            self._periodic = build_periodic_table(db, table)
        if app is not None:
            self.init_app(app, db)

    # -- registration -------------------------------------------------------

    def init_app(self, app: Flask, db: SQLAlchemy | None = None) -> None:
        """Register the queue with ``app``: read ``PLAINQUEUE_*``, map the queue
        table, tune SQLite, import ``PLAINQUEUE_TASKS``, add the ``flask queue``
        commands, and arrange for the embedded worker to start with ``flask run``.

        :raises RuntimeError: the app is already registered, or has no
            Flask-SQLAlchemy.
        :raises ConfigurationError: a ``PLAINQUEUE_*`` value is invalid.
        """
        if "plainqueue" in app.extensions:
            raise RuntimeError(
                "A 'PlainQueue' instance has already been registered on this Flask"
                " app. Import and use that instance instead."
            )
        db = self._resolve_db(app, db)
        config = QueueConfig.from_app(app)
        if self._model is None:
            self._table = self._table or config.table
            self._model = build_task_model(db, self._table)
            self._periodic = build_periodic_table(db, self._table)
        elif self._table != config.table and "PLAINQUEUE_TABLE" in _explicit_keys(app):
            raise ConfigurationError(
                f"PLAINQUEUE_TABLE is {config.table!r} but this queue's table is"
                f" {self._table!r}; one PlainQueue has one table. Use the same name"
                " for every app, or one PlainQueue per table."
            )
        with app.app_context():
            engine = db.engines[self._model.__table__.info.get("bind_key")]
        if engine.dialect.name == "sqlite":
            configure_sqlite_engine(
                engine,
                synchronous=config.sqlite_synchronous,
                busy_timeout=config.sqlite_busy_timeout,
            )
        storage = Storage(
            engine, self._model.__table__, notify=config.notify, periodic=self._periodic
        )
        state = _AppState(config=config, storage=storage)
        self._apps[app] = state
        app.extensions["plainqueue"] = self
        self._listen_for_commits(db)
        import_task_modules(config.tasks)

        from .cli import make_cli

        app.cli.add_command(make_cli(self))
        if config.dashboard:
            from .dashboard import make_blueprint

            app.register_blueprint(make_blueprint(self), url_prefix=config.dashboard_url)
        if config.embedded_worker and not app.testing and _serving_with_flask_run():
            self.start_worker(app)
            _exit_on_sigterm()

    def _resolve_db(self, app: Flask, db: SQLAlchemy | None) -> SQLAlchemy:
        registered = app.extensions.get("sqlalchemy")
        db = db or self.db or registered
        if db is None:
            raise RuntimeError(
                "PlainQueue needs Flask-SQLAlchemy: call 'db.init_app(app)' before"
                " 'queue.init_app(app)', or pass 'PlainQueue(db=db)'."
            )
        if self.db is not None and db is not self.db:
            raise RuntimeError(
                "This PlainQueue was created with another SQLAlchemy instance than the"
                " one given to init_app; one queue stores its table in one 'db'."
            )
        if registered is not db:
            raise RuntimeError(
                "The SQLAlchemy instance is not registered on this app: call"
                " 'db.init_app(app)' before 'queue.init_app(app)'."
            )
        self.db = db
        return db

    def _state(self, app: Flask | None = None) -> _AppState:
        if app is None:
            try:
                app = current_app._get_current_object()  # type: ignore[attr-defined]
            except RuntimeError:
                raise RuntimeError(
                    "Working outside of application context: this needs the app. Use"
                    " 'with app.app_context():', or pass the app explicitly."
                ) from None
        try:
            return self._apps[app]  # type: ignore[index]
        except KeyError:
            raise RuntimeError(
                "The current Flask app is not registered with this 'PlainQueue'"
                " instance. Did you forget to call 'queue.init_app(app)'?"
            ) from None

    @property
    def Task(self) -> type[TaskModel]:  # noqa: N802 - a model class, named like one
        """The mapped model of the queue table (on ``db.metadata``)."""
        if self._model is None:
            raise RuntimeError(
                "The queue table is mapped when the queue knows its database: call"
                " 'queue.init_app(app)' first, or pass 'PlainQueue(db=db, table=...)'."
            )
        return self._model

    # -- task definitions ---------------------------------------------------

    @t.overload
    def task(self, func: Callable[P, R], /) -> TaskDefinition[P, R]: ...

    @t.overload
    def task(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        batch_size: int = 1,
        success: SuccessCallback | None = None,
        failure: FailureCallback | None = None,
        max_retries: int = 5,
        retry_interval: float = 3.0,
        retry_backoff: float = 1.0,
        retry_jitter: float = 0.0,
        retry_max_delay: float = 3600.0,
        retry_on: Iterable[type[BaseException]] = (Exception,),
        poll_interval: float | None = None,
        queue: str = "default",
        priority: int = 0,
        timeout: float | None = None,
        atomic: bool = False,
    ) -> Callable[[Callable[P, R]], TaskDefinition[P, R]]: ...

    def task(
        self,
        func: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        batch_size: int = 1,
        success: SuccessCallback | None = None,
        failure: FailureCallback | None = None,
        max_retries: int = 5,
        retry_interval: float = 3.0,
        retry_backoff: float = 1.0,
        retry_jitter: float = 0.0,
        retry_max_delay: float = 3600.0,
        retry_on: Iterable[type[BaseException]] = (Exception,),
        poll_interval: float | None = None,
        queue: str = "default",
        priority: int = 0,
        timeout: float | None = None,
        atomic: bool = False,
    ) -> TaskDefinition[P, R] | Callable[[Callable[P, R]], TaskDefinition[P, R]]:
        """Register a function as a task definition; usable bare (``@queue.task``)
        or with options.

        :param name: stored in each row; default ``module.qualname``. Set it, so
            renaming the function cannot orphan waiting tasks.
        :param batch_size: how many due tasks of this name a worker claims at once
            and runs concurrently.
        :param success: ``success(data)`` after a successful run; its database
            writes commit together with the row's removal.
        :param failure: ``failure(data, exception)`` after each failed attempt.
        :param max_retries: failures allowed before the task is kept as dead; it
            runs at most ``max_retries + 1`` times.
        :param retry_interval: seconds before the first retry.
        :param retry_backoff: factor the interval grows by with each failure.
        :param retry_jitter: up to this fraction is added to each wait at random.
        :param retry_max_delay: the longest wait between attempts.
        :param retry_on: exception classes that are retried; others make the task
            dead at once.
        :param poll_interval: how often an idle worker polls for this task;
            default ``PLAINQUEUE_POLL_INTERVAL``.
        :param queue: the queue name, for ``flask queue work --queue``.
        :param priority: tasks of higher priority are claimed first.
        :param timeout: seconds an attempt may run before it is failed with a
            :class:`TimeoutError` (a coroutine is cancelled; a sync function's
            thread runs on and its result is discarded).
        :param atomic: the function's ``db.session`` writes, the success
            callback's and the row's removal commit in one transaction, or none.
        :raises DuplicateTaskName: the name is taken by another function.
        :raises ConfigurationError: an option is out of range.
        """
        return self._decorator(
            func,
            name=name,
            success=success,
            failure=failure,
            schedule=None,
            catch_up=True,
            options=dict(
                batch_size=batch_size,
                max_retries=max_retries,
                retry_interval=retry_interval,
                retry_backoff=retry_backoff,
                retry_jitter=retry_jitter,
                retry_max_delay=retry_max_delay,
                retry_on=tuple(retry_on),
                poll_interval=poll_interval,
                queue=queue,
                priority=priority,
                timeout=timeout,
                atomic=atomic,
            ),
        )

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: datetime.timedelta | None = None,
        tz: str | None = None,
        catch_up: bool = True,
        name: str | None = None,
        success: SuccessCallback | None = None,
        failure: FailureCallback | None = None,
        max_retries: int = 0,
        retry_interval: float = 3.0,
        queue: str = "default",
        priority: int = 0,
        timeout: float | None = None,
        atomic: bool = False,
    ) -> Callable[[Callable[P, R]], TaskDefinition[P, R]]:
        """Register a function that runs on a schedule, once per tick however many
        workers run: a ``cron`` expression (croniter syntax, in ``tz``, UTC by
        default) or a fixed interval ``every``.

        The function may take no argument (or one, which is ``None``). A tick
        missed while no worker ran is run once when one starts (not once per
        missed tick); with ``catch_up=False`` a tick is skipped unless a worker
        sees it within a few seconds. A new schedule waits for its first tick.
        Other options are as for :meth:`task`; ``max_retries`` defaults to 0,
        since the next tick comes anyway.

        :raises ConfigurationError: a bad cron expression, ``every`` not
            positive, both or neither given, an unknown ``tz``.
        """
        from .schedules import Schedule

        schedule = Schedule(cron=cron, every=every, tz=tz)
        if not isinstance(catch_up, bool):
            raise ConfigurationError(f"catch_up must be True or False, got {catch_up!r}.")

        def decorator(f: Callable[P, R]) -> TaskDefinition[P, R]:
            definition = self._decorator(
                f,
                name=name,
                success=success,
                failure=failure,
                schedule=schedule,
                catch_up=catch_up,
                options=dict(
                    max_retries=max_retries,
                    retry_interval=retry_interval,
                    queue=queue,
                    priority=priority,
                    timeout=timeout,
                    atomic=atomic,
                ),
            )
            return t.cast("TaskDefinition[P, R]", definition)

        return decorator

    def _decorator(
        self,
        func: Callable[P, R] | None,
        *,
        name: str | None,
        success: SuccessCallback | None,
        failure: FailureCallback | None,
        schedule: t.Any,
        catch_up: bool,
        options: dict[str, t.Any],
    ) -> TaskDefinition[P, R] | Callable[[Callable[P, R]], TaskDefinition[P, R]]:
        task_options = TaskOptions(**options)
        for label, callback in (("success", success), ("failure", failure)):
            if callback is not None and not callable(callback):
                raise ConfigurationError(f"{label} must be callable, got {callback!r}.")

        def decorator(f: Callable[P, R]) -> TaskDefinition[P, R]:
            if not callable(f):
                raise TypeError(f"@queue.task decorates a function, got {f!r}.")
            if task_options.atomic and inspect.iscoroutinefunction(f):
                raise ConfigurationError(
                    "atomic=True needs a sync function: an async task's session"
                    " lives on the event loop, outside the atomic transaction."
                )
            definition = TaskDefinition(
                self,
                f,
                name=name or default_name(f),
                options=task_options,
                success=success,
                failure=failure,
                schedule=schedule,
                catch_up=catch_up,
            )
            self.registry.add(definition)
            return definition

        if func is not None:
            return decorator(func)
        return decorator

    # -- enqueue ------------------------------------------------------------

    def perform(
        self,
        task: TaskDefinition[t.Any, t.Any] | str,
        data: JSONValue = None,
        *,
        commit: bool = True,
        delay: float | datetime.timedelta | None = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
    ) -> str:
        """Store a task for a worker to run and return its id.

        The row goes through the app's ``db.session``. With ``commit=True`` (the
        default) the session is committed, so the task is durable when this
        returns. With ``commit=False`` it is only flushed into the session's
        transaction: it is enqueued when the caller commits and vanishes if the
        caller rolls back.

        :param task: a task definition (or its registered name).
        :param data: one JSON-serialisable value, passed to the function.
        :param commit: commit the session (default) or join its transaction.
        :param delay: run no sooner than this many seconds from now.
        :param run_at: run no sooner than this timezone-aware datetime.
        :param priority: higher is claimed first; default the task's priority.
        :param unique_key: while a task of this name with this key waits or runs,
            return its id instead of storing another.
        :raises TypeError: ``data`` is not JSON-serialisable (nothing is written).
        :raises ValueError: a negative delay, a naive ``run_at``, or both given.
        :raises RuntimeError: no app context, or the app is not registered.
        """
        definition = self._definition(task)
        state = self._state()
        row = self._row(definition, data, delay, run_at, priority, unique_key)
        session = t.cast("SQLAlchemy", self.db).session()
        if commit:
            # Ending any read snapshot first lets the insert take the write lock
            # without SQLite's "database is locked" on upgrade; the caller's pending
            # work would be committed by this call anyway.
            session.commit()
            state.storage.begin_session_write(session)
        try:
            if unique_key is None:
                (task_id,) = state.storage.insert(session, [row])
            else:
                task_id, _ = state.storage.insert_unique(session, row)
            if commit:
                session.commit()
        except BaseException:
            if commit:
                session.rollback()
            raise
        self._enqueued(state, session, [task_id], definition.name, committed=commit)
        return str(task_id)

    def perform_many(
        self,
        task: TaskDefinition[t.Any, t.Any] | str,
        items: Iterable[JSONValue],
        *,
        commit: bool = True,
        delay: float | datetime.timedelta | None = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
    ) -> list[str]:
        """Store one task per item of ``items`` in one transaction and one
        round trip; return their ids in order. Every item is checked before
        anything is written.

        :raises TypeError: an item is not JSON-serialisable (nothing is written).
        """
        definition = self._definition(task)
        state = self._state()
        rows = [self._row(definition, item, delay, run_at, priority, None) for item in items]
        if not rows:
            return []
        session = t.cast("SQLAlchemy", self.db).session()
        if commit:
            session.commit()
            state.storage.begin_session_write(session)
        try:
            ids = state.storage.insert(session, rows)
            if commit:
                session.commit()
        except BaseException:
            if commit:
                session.rollback()
            raise
        self._enqueued(state, session, ids, definition.name, committed=commit)
        return [str(i) for i in ids]

    def _definition(
        self, task: TaskDefinition[t.Any, t.Any] | str
    ) -> TaskDefinition[t.Any, t.Any]:
        if isinstance(task, str):
            return self.registry.get(task)
        if not isinstance(task, TaskDefinition):
            raise TypeError(
                f"perform() takes a task definition (a function decorated with"
                f" @queue.task) or its name, got {task!r}."
            )
        if task.name not in self.registry or self.registry.get(task.name) is not task:
            raise RuntimeError(
                f"Task {task.name!r} is registered with another PlainQueue instance."
            )
        return task

    def _row(
        self,
        definition: TaskDefinition[t.Any, t.Any],
        data: JSONValue,
        delay: float | datetime.timedelta | None,
        run_at: datetime.datetime | None,
        priority: int | None,
        unique_key: str | None,
    ) -> dict[str, t.Any]:
        try:
            text = json.dumps(data, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise TaskDataError(
                f"The data for task {definition.name!r} is not JSON-serialisable:"
                f" {exc}. Pass only dicts, lists, strings, numbers, booleans and"
                " None, e.g. an id instead of a model object."
            ) from exc
        now = datetime.datetime.now(UTC)
        due = _due_time(now, delay, run_at)
        if priority is None:
            priority = definition.options.priority
        elif isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be a whole number, got {priority!r}.")
        if unique_key is not None and not isinstance(unique_key, str):
            raise TypeError(f"unique_key must be a string, got {unique_key!r}.")
        return new_row(
            definition.name,
            queue=definition.options.queue,
            priority=priority,
            data=text,
            now=now,
            run_at=due,
            unique_key=unique_key,
        )

    def _enqueued(
        self,
        state: _AppState,
        session: Session,
        ids: list[int],
        name: str,
        *,
        committed: bool,
    ) -> None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        for task_id in ids:
            signals.send(signals.task_enqueued, app, task_id=task_id, task=name)
        if committed:
            self._after_enqueue(app, state, ids)
        else:
            pending = session.info.setdefault(_SESSION_KEY, [])
            pending.append((app, ids))

    def _after_enqueue(self, app: Flask, state: _AppState, ids: list[int]) -> None:
        if state.config.eager:
            worker = self._eager_worker(app, state)
            for task_id in ids:
                worker.run_task(task_id)
            return
        for worker in state.workers:
            worker.wake()

    def _listen_for_commits(self, db: SQLAlchemy) -> None:
        factory = db.session.session_factory
        if event.contains(factory, "after_commit", self._on_commit):
            return
        event.listen(factory, "after_commit", self._on_commit)
        event.listen(factory, "after_rollback", self._on_rollback)

    def _on_commit(self, session: Session) -> None:
        pending = session.info.pop(_SESSION_KEY, None)
        for app, ids in pending or ():
            state = self._apps.get(app)
            if state is not None:
                self._after_enqueue(app, state, ids)

    def _on_rollback(self, session: Session) -> None:
        session.info.pop(_SESSION_KEY, None)

    # -- running ------------------------------------------------------------

    def _make_worker(self, app: Flask, **kwargs: t.Any) -> Worker:
        state = self._state(app)
        return Worker(
            app,
            t.cast("SQLAlchemy", self.db),
            state.storage,
            self.registry,
            state.config,
            **kwargs,
        )

    def _eager_worker(self, app: Flask, state: _AppState) -> Worker:
        with state.lock:
            if state.eager_worker is None:
                state.eager_worker = self._make_worker(app)
            return state.eager_worker

    def worker(
        self,
        app: Flask | None = None,
        *,
        concurrency: int | None = None,
        queues: Iterable[str] | None = None,
    ) -> Worker:
        """A new :class:`~flask_plainqueue.worker.Worker` for ``app`` (default: the
        current app), for running in a thread or process of your own. Tasks
        enqueued in this process wake it at once."""
        app = app or current_app._get_current_object()  # type: ignore[attr-defined]
        worker = self._make_worker(
            app, concurrency=concurrency, queues=list(queues) if queues else None
        )
        state = self._state(app)
        with state.lock:
            state.workers.append(worker)
        return worker

    def forget_worker(self, worker: Worker) -> None:
        """Stop waking ``worker`` on enqueue (it has stopped)."""
        state = self._apps.get(worker.app)
        if state is not None:
            with state.lock:
                if worker in state.workers:
                    state.workers.remove(worker)

    # -- operations -----------------------------------------------------------

    def cancel(self, task_id: str | int) -> bool:
        """Remove a task that is not running (pending, scheduled or dead).

        :returns: ``False`` if it is running (its worker owns it) or gone.
        :raises RuntimeError: no app context.

        .. versionadded:: 0.1
        """
        from . import inspection

        return bool(inspection.delete(self._state().storage, [task_id]))

    def retry(self, task_id: str | int) -> bool:
        """Make a dead or waiting task due now, with its failure count reset, so
        it gets ``max_retries`` fresh retries.

        :returns: ``False`` if it is running or gone.
        :raises flask_plainqueue.inspection.UniqueTaskWaiting: it has a
            ``unique_key`` that another waiting task holds.
        :raises RuntimeError: no app context.

        .. versionadded:: 0.1
        """
        from . import inspection

        state = self._state()
        if not inspection.retry_one(state.storage, task_id):
            return False
        for worker in list(state.workers):
            worker.wake()
        return True

    def dashboard_auth(self, func: Callable[[], bool]) -> Callable[[], bool]:
        """Register the dashboard's authorisation check, as a decorator.

        ``func()`` runs in every dashboard request and returns whether the
        current user may see and change the queue; without a check (this or
        ``PLAINQUEUE_DASHBOARD_AUTH``) every dashboard URL answers 403. It
        may also ``abort()`` with a response of its own, e.g. a redirect to
        the login page.

        .. code-block:: python

            @queue.dashboard_auth
            def is_admin() -> bool:
                return current_user.is_authenticated and current_user.is_admin

        .. versionadded:: 0.1
        """
        if not callable(func):
            raise TypeError(f"@queue.dashboard_auth decorates a function, got {func!r}.")
        self._dashboard_auth = func
        return func

    def prune(self) -> int:
        """Delete dead tasks older than ``PLAINQUEUE_KEEP_FAILED`` now (the worker
        also does it about once a minute); return how many were deleted."""
        state = self._state()
        if state.config.keep_failed is None:
            return 0
        before = datetime.datetime.now(UTC) - datetime.timedelta(
            seconds=state.config.keep_failed
        )
        return state.storage.prune(before)

    def drain(self) -> int:
        """Run every due task of the current app the way the worker does, one
        claimed batch at a time, until none is due; return how many attempts
        ran (failed ones count). For tests and scripts.

        :raises RuntimeError: no app context.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        worker = self._make_worker(app)
        try:
            return worker.drain()
        finally:
            worker.close()

    def start_worker(self, app: Flask | None = None, *, force: bool = False) -> WorkerThread:
        """Start the embedded worker thread for ``app`` (default: the current app)
        unless it runs already; return it. Under gevent's monkey-patching the
        thread is a greenlet.

        Use it where ``flask run`` is not the server, e.g. in gunicorn's
        ``post_fork`` hook.

        :param force: start even when ``app.testing`` is set.
        :raises RuntimeError: ``app.testing`` is set and ``force`` is not.
        """
        app = app or current_app._get_current_object()  # type: ignore[attr-defined]
        state = self._state(app)
        if app.testing and not force:
            raise RuntimeError(
                "Not starting the embedded worker because 'app.testing' is set; use"
                " 'queue.drain()' in tests, or 'start_worker(force=True)'."
            )
        with state.lock:
            if state.thread is not None and state.thread.is_alive():
                return state.thread
        worker = self.worker(app)
        thread = WorkerThread(worker)
        with state.lock:
            state.thread = thread
        thread.start()
        _at_exit(lambda: self.stop_worker(app))
        return thread

    def stop_worker(self, app: Flask | None = None, *, timeout: float | None = None) -> bool:
        """Stop the embedded worker: no new claims, running tasks get ``timeout``
        seconds (default ``PLAINQUEUE_SHUTDOWN_GRACE``), the rest are handed back.
        Returns whether it stopped (``True`` if none was running)."""
        app = app or current_app._get_current_object()  # type: ignore[attr-defined]
        state = self._state(app)
        with state.lock:
            thread, state.thread = state.thread, None
        if thread is None:
            return True
        stopped = thread.stop(state.config.shutdown_grace if timeout is None else timeout)
        self.forget_worker(thread.worker)
        return stopped


def _due_time(
    now: datetime.datetime,
    delay: float | datetime.timedelta | None,
    run_at: datetime.datetime | None,
) -> datetime.datetime:
    if delay is not None and run_at is not None:
        raise ValueError("Give delay or run_at, not both.")
    if run_at is not None:
        if not isinstance(run_at, datetime.datetime):
            raise TypeError(f"run_at must be a datetime, got {run_at!r}.")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise ValueError(
                f"run_at is a naive datetime ({run_at!r}); give it a timezone, e.g."
                " datetime.now(timezone.utc) + timedelta(minutes=5)."
            )
        return run_at.astimezone(UTC)
    if delay is None:
        return now
    if isinstance(delay, datetime.timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise TypeError(f"delay must be seconds or a timedelta, got {delay!r}.")
    else:
        seconds = float(delay)
    if seconds < 0:
        raise ValueError(f"delay must not be negative, got {delay!r}.")
    return now + datetime.timedelta(seconds=seconds)


def _explicit_keys(app: Flask) -> set[str]:
    return {k for k in app.config if k.startswith("PLAINQUEUE_")}


def _serving_with_flask_run() -> bool:
    """Whether this process is the one ``flask run`` serves from: the reloader's
    child (``WERKZEUG_RUN_MAIN``), or the only process under ``--no-reload``.
    Other commands (``flask shell``, ``flask queue work``) and the reloader's
    watching parent start no worker."""
    from flask.cli import run_command

    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command is not run_command:
        return False
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return True
    reload = ctx.params.get("reload")
    if reload is None:
        from flask.helpers import get_debug_flag

        reload = get_debug_flag()
    return not reload


def _exit_on_sigterm() -> None:
    """Make SIGTERM exit normally, so the worker is stopped at exit and hands back
    what it runs. Werkzeug's reloader does this for its child; under
    ``flask run --no-reload`` nothing would, and SIGTERM would kill the process
    with the worker's tasks still leased. A handler the app set is kept."""
    import signal
    import sys

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


def _at_exit(func: Callable[[], object]) -> None:
    # threading's hook runs before concurrent.futures joins its pool threads, so
    # the worker can still hand back unfinished tasks; atexit would run too late.
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(func)
            return
        except RuntimeError:  # the interpreter is already shutting down
            return
    import atexit

    atexit.register(func)
