"""The :class:`PlainQueue` extension: registration, task definitions, enqueueing
and the embedded worker."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import typing as t
import weakref
from collections.abc import Callable
from collections.abc import Iterable

import sqlalchemy as sa
from flask import current_app
from flask import Flask
from sqlalchemy import event
from sqlalchemy.orm import Session

from . import signals
from .config import QueueConfig
from .embedded import at_exit
from .embedded import exit_on_sigterm
from .embedded import serving_with_flask_run
from .enqueue import build_row
from .exceptions import ConfigurationError
from .models import build_periodic_table
from .models import build_task_model
from .models import TaskModel
from .sqlite import configure_sqlite_engine
from .storage import Storage
from .tasks import import_task_modules
from .tasks import JSONValue
from .tasks import TaskDecorators
from .tasks import TaskDefinition
from .tasks import TaskRegistry
from .worker import Worker
from .worker import WorkerThread

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

logger = logging.getLogger(__name__)

UTC = datetime.timezone.utc
_T = t.TypeVar("_T")
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


class PlainQueue(TaskDecorators):
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

            app.register_blueprint(
                make_blueprint(self), url_prefix=config.dashboard_url
            )
        if config.embedded_worker and not app.testing and serving_with_flask_run():
            self.start_worker(app)
            exit_on_sigterm()

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
        return t.cast("SQLAlchemy", db)

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
            return self._apps[app]
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
        row = build_row(definition, data, delay, run_at, priority, unique_key)
        session = t.cast("SQLAlchemy", self.db).session()
        if unique_key is None:
            (task_id,) = self._insert(state, session, [row], commit)
        else:
            task_id = self._in_transaction(
                state,
                session,
                commit,
                lambda: state.storage.insert_unique(session, row)[0],
            )
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
        rows = [
            build_row(definition, item, delay, run_at, priority, None) for item in items
        ]
        if not rows:
            return []
        session = t.cast("SQLAlchemy", self.db).session()
        ids = self._insert(state, session, rows, commit)
        self._enqueued(state, session, ids, definition.name, committed=commit)
        return [str(i) for i in ids]

    def _insert(
        self,
        state: _AppState,
        session: Session,
        rows: list[dict[str, t.Any]],
        commit: bool,
    ) -> list[int]:
        storage = state.storage
        idle = not session.in_transaction() and not (
            session.new or session.dirty or session.deleted
        )
        if commit and idle and storage.hot is not None:
            # Nothing of the caller's to commit with: one write transaction of its
            # own on the SQLite driver's cursor, several times faster than the
            # session's.
            return storage.hot.insert(rows)
        return self._in_transaction(
            state, session, commit, lambda: storage.insert(session, rows)
        )

    def _in_transaction(
        self,
        state: _AppState,
        session: Session,
        commit: bool,
        insert: Callable[[], _T],
    ) -> _T:
        """Run ``insert`` in the session's transaction; with ``commit``, take the
        write lock first (SQLite) and commit the caller's pending work with it."""
        if not commit:
            return insert()
        try:
            state.storage.begin_session_write(session, discard=False)
            result = insert()
            session.commit()
        except BaseException:
            session.rollback()
            raise
        return result

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
            raise TypeError(
                f"@queue.dashboard_auth decorates a function, got {func!r}."
            )
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

    def start_worker(
        self, app: Flask | None = None, *, force: bool = False
    ) -> WorkerThread:
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
        at_exit(lambda: self.stop_worker(app))
        return thread

    def stop_worker(
        self, app: Flask | None = None, *, timeout: float | None = None
    ) -> bool:
        """Stop the embedded worker: no new claims, running tasks get ``timeout``
        seconds (default ``PLAINQUEUE_SHUTDOWN_GRACE``), the rest are handed back.
        Returns whether it stopped (``True`` if none was running)."""
        app = app or current_app._get_current_object()  # type: ignore[attr-defined]
        state = self._state(app)
        with state.lock:
            thread, state.thread = state.thread, None
        if thread is None:
            return True
        stopped = thread.stop(
            state.config.shutdown_grace if timeout is None else timeout
        )
        self.forget_worker(thread.worker)
        return stopped


def _explicit_keys(app: Flask) -> set[str]:
    return {k for k in app.config if k.startswith("PLAINQUEUE_")}
