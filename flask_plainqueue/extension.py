"""The :class:`PlainQueue` extension: registration and the workers, with
enqueueing (perform.py), the public read/admin API (management.py,
operations.py) and task streams (streaming.py) mixed in."""

from __future__ import annotations

import typing as t
import weakref
from collections.abc import Callable
from collections.abc import Iterable

from flask import current_app
from flask import Flask

from .config import QueueConfig
from .embedded import exit_on_sigterm
from .embedded import serving_with_flask_run
from .embedded import WorkerThread
from .exceptions import ConfigurationError
from .logs import log_like_the_app
from .management import QueueManagement
from .operations import QueueOperations
from .perform import Enqueueing
from .runtime import AppRuntime
from .schema import build_tables
from .schema import Tables
from .schema import TaskModel
from .store import AppParts
from .store import Store
from .streaming import QueueStreaming
from .tasks import import_task_modules
from .tasks import TaskDecorators
from .tasks import TaskDefinition
from .tasks import TaskRegistry
from .worker import Worker

if t.TYPE_CHECKING:
    from flask.wrappers import Response
    from flask_sqlalchemy import SQLAlchemy
    from prometheus_client.registry import CollectorRegistry

    from .metrics import QueueMetrics

_T = t.TypeVar("_T")


class PlainQueue(
    Enqueueing, TaskDecorators, QueueManagement, QueueOperations, QueueStreaming
):
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
        self._metrics: QueueMetrics | None = None
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
        log_like_the_app()
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

    def metrics_view(self) -> Callable[[], Response]:
        """A Flask view serving this queue's Prometheus metrics for the current
        app, for the app to register on a route of its own (and guard as it
        guards its other private URLs):

        .. code-block:: python

            app.add_url_rule("/metrics", view_func=queue.metrics_view())

        The first call (in each process) starts counting finished attempts;
        see :ref:`metrics`. Needs ``pip install 'flask-plainqueue[prometheus]'``.

        :raises ConfigurationError: ``prometheus_client`` is not installed.

        .. versionadded:: 0.1
        """
        metrics = self._metrics_state()

        def plainqueue_metrics() -> Response:
            return metrics.view()

        return plainqueue_metrics

    def metrics_registry(self, app: Flask | None = None) -> CollectorRegistry:
        """The :class:`~prometheus_client.CollectorRegistry` holding only this
        queue's metrics for ``app`` (default: the current app), e.g. for
        ``prometheus_client.start_http_server(port, registry=...)`` in a
        process that serves no Flask views. Starts counting like
        :meth:`metrics_view`.

        :raises ConfigurationError: ``prometheus_client`` is not installed.

        .. versionadded:: 0.1
        """
        metrics = self._metrics_state()
        return metrics.registry(self._state(app).app)

    def _metrics_state(self) -> QueueMetrics:
        # Imported here: prometheus_client is an optional dependency.
        from .metrics import QueueMetrics

        if self._metrics is None:
            self._metrics = QueueMetrics(self)
        return self._metrics

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
