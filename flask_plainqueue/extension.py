"""The :class:`PlainQueue` extension: registration, enqueueing, the public
read/admin API, and the workers."""

from __future__ import annotations

import datetime
import typing as t
import weakref
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping

from flask import current_app
from flask import Flask
from sqlalchemy import event
from sqlalchemy.orm import Session

from . import signals
from . import validate
from .config import QueueConfig
from .embedded import exit_on_sigterm
from .embedded import serving_with_flask_run
from .embedded import WorkerThread
from .enqueue import build_row
from .enqueue import JOIN_SESSION
from .enqueue import TaskId
from .exceptions import ConfigurationError
from .exceptions import InvalidArgument
from .management import QueueManagement
from .runtime import AppRuntime
from .schema import build_tables
from .schema import Tables
from .schema import TaskModel
from .store import AppParts
from .store import Store
from .tasks import import_task_modules
from .tasks import JSONValue
from .tasks import PerformArgs
from .tasks import TaskDecorators
from .tasks import TaskDefinition
from .tasks import TaskRegistry
from .worker import Worker

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy
    from typing_extensions import Unpack

_T = t.TypeVar("_T")
_SESSION_KEY = "plainqueue_after_commit"


class PlainQueue(TaskDecorators, QueueManagement):
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
        self._tables: Tables | None = None
        # Weak keys: a registered app that is dropped (tests create many) is
        # freed with its store and engine listeners.
        self._apps: weakref.WeakKeyDictionary[Flask, AppRuntime] = (
            weakref.WeakKeyDictionary()
        )
        self._dashboard_auth: Callable[[], bool] | None = None
        if db is not None and table is not None:
            self._tables = build_tables(db, table)
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
        # Before the defaults are filled in: only a table name the app set
        # itself can disagree with the queue's.
        table_set = "PLAINQUEUE_TABLE" in app.config
        config = QueueConfig.from_app(app)
        if self._tables is None:
            self._table = self._table or config.table
            self._tables = build_tables(db, self._table)
        elif table_set and self._table != config.table:
            raise ConfigurationError(
                f"PLAINQUEUE_TABLE is {config.table!r} but this queue's table is"
                f" {self._table!r}; one PlainQueue has one table. Use the same name"
                " for every app, or one PlainQueue per table."
            )
        with app.app_context():
            engine = db.engines[self._tables.tasks.info.get("bind_key")]
        store = Store(engine, self._tables, config)
        for definition in self.registry:
            _check_for(store, definition)
        store.backend.configure()
        self._apps[app] = AppRuntime(app, AppParts(db, store, self.registry, config))
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

    def check_definition(self, definition: TaskDefinition[t.Any, t.Any]) -> None:
        for state in list(self._apps.values()):
            _check_for(state.store, definition)

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

    def _state(self, app: Flask | None = None) -> AppRuntime:
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
        if self._tables is None:
            raise RuntimeError(
                "The queue table is mapped when the queue knows its database: call"
                " 'queue.init_app(app)' first, or pass 'PlainQueue(db=db, table=...)'."
            )
        return self._tables.model

    def store(self, app: Flask | None = None) -> Store:
        """The queue's storage layer for ``app`` (default: the current app): the
        statements on its engine, for tests and tools. Most code wants the
        methods below instead.

        .. versionadded:: 0.1
        """
        return self._state(app).store

    def settings(self, app: Flask | None = None) -> QueueConfig:
        """The validated ``PLAINQUEUE_*`` settings of ``app`` (default: the
        current app).

        .. versionadded:: 0.1
        """
        return self._state(app).config

    # -- enqueue ------------------------------------------------------------

    def perform(
        self,
        task: TaskDefinition[t.Any, t.Any] | str,
        data: JSONValue = None,
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
        :param data: one JSON value (string keys only), passed to the function.
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

    def perform_many(
        self,
        task: TaskDefinition[t.Any, t.Any] | str,
        items: Iterable[JSONValue],
        *,
        commit: bool = True,
        delay: float | datetime.timedelta | None = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
    ) -> list[int]:
        """Store one task per item of ``items`` in one transaction and one
        round trip; return their ids in order. Every item is checked before
        anything is written.

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
        self, task: TaskDefinition[t.Any, t.Any] | str
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

    # -- running ------------------------------------------------------------

    def wake_workers(self, app: Flask | None = None) -> None:
        """Cut the idle wait of this process's workers of ``app`` (default: the
        current app) short: there is work. Enqueueing here does it anyway."""
        self._state(app).wake()

    def worker(
        self,
        app: Flask | None = None,
        *,
        concurrency: int | None = None,
        queues: Iterable[str] | None = None,
    ) -> Worker:
        """A new :class:`~flask_plainqueue.Worker` for ``app`` (default: the
        current app), for running in a thread or process of your own. Tasks
        enqueued in this process wake it at once."""
        return self._state(app).worker(
            concurrency=concurrency, queues=list(queues) if queues else None
        )

    def forget_worker(self, worker: Worker) -> None:
        """Stop waking ``worker`` on enqueue (it has stopped)."""
        state = self._apps.get(worker.app)
        if state is not None:
            state.forget(worker)

    def drain(self, task: TaskDefinition[t.Any, t.Any] | str | None = None) -> int:
        """Run every due task of the current app (only those of ``task``, a
        definition or its name, when given) the way the worker does, one
        claimed batch at a time, until none is due; return how many attempts
        ran (failed ones count). For tests and scripts.

        :raises RuntimeError: no app context.
        """
        if task is None:
            return self._state().drain()
        return self._state().drain([self._definition(task).name])

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
        :raises ConfigurationError: the database pool is too small for
            ``PLAINQUEUE_CONCURRENCY``.
        """
        state = self._state(app)
        if state.app.testing and not force:
            raise RuntimeError(
                "Not starting the embedded worker because 'app.testing' is set; use"
                " 'queue.drain()' in tests, or 'start_worker(force=True)'."
            )
        return state.start_embedded()

    def stop_worker(
        self, app: Flask | None = None, *, timeout: float | None = None
    ) -> bool:
        """Stop the embedded worker: no new claims, running tasks get ``timeout``
        seconds (default ``PLAINQUEUE_SHUTDOWN_GRACE``) to finish, the rest are
        handed back. Returns whether it stopped (``True`` if none was running)."""
        return self._state(app).stop_embedded(timeout)

    def embedded_worker(self, app: Flask | None = None) -> WorkerThread | None:
        """The embedded worker's thread for ``app`` while it runs, else ``None``.

        .. versionadded:: 0.1
        """
        return self._state(app).embedded

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

    def dashboard_check(self) -> Callable[[], bool] | None:
        """The current app's dashboard authorisation check, if any
        (``PLAINQUEUE_DASHBOARD_AUTH`` first, then :meth:`dashboard_auth`)."""
        return self._state().config.dashboard_auth or self._dashboard_auth


def _check_for(store: Store, definition: TaskDefinition[t.Any, t.Any]) -> None:
    options = definition.options
    if options.atomic and options.timeout is not None:
        if store.backend.write_locks_database:
            raise ConfigurationError(
                f"Task {definition.name!r}: atomic=True with timeout= cannot work on"
                " SQLite: a timed-out atomic task keeps the database's write lock"
                " until it returns, so its timeout could not be recorded and every"
                " other write would wait. Drop one of the two options."
            )
