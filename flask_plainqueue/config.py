"""The ``PLAINQUEUE_*`` configuration keys: their defaults and validation."""

from __future__ import annotations

import dataclasses
import typing as t
from collections.abc import Mapping

from . import validate
from .exceptions import ConfigurationError

if t.TYPE_CHECKING:
    from flask import Flask

#: Every key the extension reads, with its default. ``init_app`` seeds missing keys
#: with ``app.config.setdefault`` so ``app.config`` shows the values in effect.
DEFAULTS: Mapping[str, t.Any] = {
    "PLAINQUEUE_EMBEDDED_WORKER": True,
    "PLAINQUEUE_EAGER": False,
    "PLAINQUEUE_TASKS": [],
    "PLAINQUEUE_POLL_INTERVAL": 1.0,
    "PLAINQUEUE_LEASE_SECONDS": 60.0,
    "PLAINQUEUE_TABLE": "plainqueue_tasks",
    "PLAINQUEUE_CONCURRENCY": 5,
    "PLAINQUEUE_SHUTDOWN_GRACE": 30.0,
    "PLAINQUEUE_HEARTBEAT": 10.0,
    "PLAINQUEUE_WORKER_TIMEOUT": 60.0,
    "PLAINQUEUE_SQLITE_SYNCHRONOUS": "NORMAL",
    "PLAINQUEUE_SQLITE_BUSY_TIMEOUT": 30.0,
    "PLAINQUEUE_POSTGRESQL_SYNCHRONOUS_COMMIT": None,
    "PLAINQUEUE_KEEP_FAILED": 30 * 24 * 3600.0,
    "PLAINQUEUE_KEEP_SUCCEEDED": 0.0,
    "PLAINQUEUE_KEEP_STATS": 7 * 24 * 3600.0,
    "PLAINQUEUE_NOTIFY": True,
    "PLAINQUEUE_DASHBOARD": False,
    "PLAINQUEUE_DASHBOARD_URL": "/queue",
    "PLAINQUEUE_DASHBOARD_AUTH": None,
    "PLAINQUEUE_DASHBOARD_BACK_URL": "/",
}

#: The allowed ranges of the numeric keys: ``(minimum, maximum)``, in seconds
#: for durations (documented in ``docs/config.rst``).
RANGES: Mapping[str, tuple[float, float]] = {
    "PLAINQUEUE_POLL_INTERVAL": (0.0, 3600.0),
    "PLAINQUEUE_LEASE_SECONDS": (0.0, 7 * 86400.0),
    "PLAINQUEUE_CONCURRENCY": (1, 256),
    "PLAINQUEUE_SHUTDOWN_GRACE": (0.0, 86400.0),
    "PLAINQUEUE_HEARTBEAT": (0.0, 3600.0),
    "PLAINQUEUE_WORKER_TIMEOUT": (0.0, 86400.0),
    "PLAINQUEUE_SQLITE_BUSY_TIMEOUT": (0.0, 86400.0),
    "PLAINQUEUE_KEEP_FAILED": (0.0, validate.MAX_SECONDS),
    "PLAINQUEUE_KEEP_SUCCEEDED": (0.0, validate.MAX_SECONDS),
    "PLAINQUEUE_KEEP_STATS": (0.0, validate.MAX_SECONDS),
}

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: PostgreSQL's values of ``synchronous_commit``.
_SYNCHRONOUS_COMMIT = ("on", "off", "local", "remote_write", "remote_apply")


@dataclasses.dataclass(frozen=True)
class QueueConfig:
    """The validated ``PLAINQUEUE_*`` settings of one app.

    Read once in :meth:`~flask_plainqueue.PlainQueue.init_app`; code reads this
    object afterwards, never ``app.config``.
    """

    embedded_worker: bool = True
    eager: bool = False
    tasks: tuple[str, ...] = ()
    poll_interval: float = 1.0
    lease_seconds: float = 60.0
    table: str = "plainqueue_tasks"
    concurrency: int = 5
    shutdown_grace: float = 30.0
    #: Seconds between a worker's heartbeats.
    heartbeat: float = 10.0
    #: A worker whose last heartbeat is older than this is lost (seconds).
    worker_timeout: float = 60.0
    sqlite_synchronous: str = "NORMAL"
    sqlite_busy_timeout: float = 30.0
    #: PostgreSQL's ``synchronous_commit`` for the worker's own claims, settles,
    #: lease extensions and hand-backs; ``None`` leaves the server's setting.
    postgresql_synchronous_commit: str | None = None
    #: Seconds dead tasks are kept before the worker prunes them; ``None`` keeps.
    keep_failed: float | None = 30 * 24 * 3600.0
    #: Seconds a succeeded task is kept with its result (the default of each
    #: task's ``keep_succeeded``); 0 deletes it at once.
    keep_succeeded: float = 0.0
    #: Seconds the per-minute stats are kept before the worker prunes them;
    #: ``None`` keeps.
    keep_stats: float | None = 7 * 24 * 3600.0
    #: PostgreSQL: ``perform`` sends NOTIFY and idle workers LISTEN.
    notify: bool = True
    dashboard: bool = False
    dashboard_url: str = "/queue"
    #: ``auth() -> bool``, called in each dashboard request; ``None`` refuses all.
    dashboard_auth: t.Callable[[], bool] | None = None
    #: Where the dashboard's "back to the app" link goes; ``None`` hides it.
    dashboard_back_url: str | None = "/"

    @classmethod
    def from_app(cls, app: Flask) -> QueueConfig:
        """Seed missing keys in ``app.config`` with their defaults, validate them
        and return the frozen result.

        :raises ConfigurationError: a key has a value of the wrong type or range.
        """
        for key, value in DEFAULTS.items():
            app.config.setdefault(
                key, list(value) if isinstance(value, list) else value
            )
        c = app.config
        sync = c["PLAINQUEUE_SQLITE_SYNCHRONOUS"]
        if not isinstance(sync, str) or sync.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"PLAINQUEUE_SQLITE_SYNCHRONOUS must be one of {', '.join(_SYNCHRONOUS)},"
                f" got {sync!r}."
            )
        commit = c["PLAINQUEUE_POSTGRESQL_SYNCHRONOUS_COMMIT"]
        if commit is not None and (
            not isinstance(commit, str) or commit.lower() not in _SYNCHRONOUS_COMMIT
        ):
            raise ConfigurationError(
                "PLAINQUEUE_POSTGRESQL_SYNCHRONOUS_COMMIT must be None (the server's"
                f" setting) or one of {', '.join(_SYNCHRONOUS_COMMIT)}, got {commit!r}."
            )
        table = c["PLAINQUEUE_TABLE"]
        if (
            not isinstance(table, str)
            or not table.replace("_", "").isalnum()
            or not table.isascii()
            or len(table) > 40
        ):
            raise ConfigurationError(
                "PLAINQUEUE_TABLE must be a table name of at most 40 ASCII letters,"
                f" digits and underscores, got {table!r}."
            )
        dashboard_url = c["PLAINQUEUE_DASHBOARD_URL"]
        if (
            not isinstance(dashboard_url, str)
            or not dashboard_url.startswith("/")
            or dashboard_url.rstrip("/") == ""
        ):
            raise ConfigurationError(
                "PLAINQUEUE_DASHBOARD_URL must be a path such as '/queue' (starting"
                f" with '/', not the site root), got {dashboard_url!r}."
            )
        dashboard_auth = c["PLAINQUEUE_DASHBOARD_AUTH"]
        if dashboard_auth is not None and not callable(dashboard_auth):
            raise ConfigurationError(
                "PLAINQUEUE_DASHBOARD_AUTH must be a function returning True for"
                f" users allowed to see the dashboard, got {dashboard_auth!r}."
            )
        back_url = c["PLAINQUEUE_DASHBOARD_BACK_URL"]
        if back_url is not None and (
            not isinstance(back_url, str)
            or not (
                (back_url.startswith("/") and not back_url.startswith("//"))
                or back_url.startswith(("https://", "http://"))
            )
        ):
            raise ConfigurationError(
                "PLAINQUEUE_DASHBOARD_BACK_URL must be a path such as '/' or an"
                f" http(s):// URL, or None for no link; got {back_url!r}."
            )
        keep_failed = c["PLAINQUEUE_KEEP_FAILED"]
        keep_stats = c["PLAINQUEUE_KEEP_STATS"]
        heartbeat = _seconds(c, "PLAINQUEUE_HEARTBEAT", positive=True)
        worker_timeout = _seconds(c, "PLAINQUEUE_WORKER_TIMEOUT", positive=True)
        if worker_timeout <= heartbeat:
            raise ConfigurationError(
                "PLAINQUEUE_WORKER_TIMEOUT must be longer than PLAINQUEUE_HEARTBEAT"
                " (three heartbeats or more is safe), got"
                f" {worker_timeout!r} and {heartbeat!r}."
            )
        return cls(
            embedded_worker=_flag(c, "PLAINQUEUE_EMBEDDED_WORKER"),
            eager=_flag(c, "PLAINQUEUE_EAGER"),
            tasks=validate.names(
                "PLAINQUEUE_TASKS (module or package names)",
                c["PLAINQUEUE_TASKS"],
                error=ConfigurationError,
            ),
            poll_interval=_seconds(c, "PLAINQUEUE_POLL_INTERVAL", positive=True),
            lease_seconds=_seconds(c, "PLAINQUEUE_LEASE_SECONDS", positive=True),
            table=table,
            concurrency=_count(c, "PLAINQUEUE_CONCURRENCY"),
            shutdown_grace=_seconds(c, "PLAINQUEUE_SHUTDOWN_GRACE"),
            heartbeat=heartbeat,
            worker_timeout=worker_timeout,
            sqlite_synchronous=sync.upper(),
            sqlite_busy_timeout=_seconds(c, "PLAINQUEUE_SQLITE_BUSY_TIMEOUT"),
            postgresql_synchronous_commit=None if commit is None else commit.lower(),
            keep_failed=(
                None if keep_failed is None else _seconds(c, "PLAINQUEUE_KEEP_FAILED")
            ),
            keep_succeeded=_seconds(c, "PLAINQUEUE_KEEP_SUCCEEDED"),
            keep_stats=(
                None if keep_stats is None else _seconds(c, "PLAINQUEUE_KEEP_STATS")
            ),
            notify=_flag(c, "PLAINQUEUE_NOTIFY"),
            dashboard=_flag(c, "PLAINQUEUE_DASHBOARD"),
            dashboard_url=dashboard_url.rstrip("/"),
            dashboard_auth=dashboard_auth,
            dashboard_back_url=back_url,
        )


def _flag(config: Mapping[str, t.Any], key: str) -> bool:
    return validate.flag(key, config[key], error=ConfigurationError)


def _seconds(config: Mapping[str, t.Any], key: str, *, positive: bool = False) -> float:
    return validate.seconds(
        key,
        config[key],
        error=ConfigurationError,
        positive=positive,
        maximum=RANGES[key][1],
    )


def _count(config: Mapping[str, t.Any], key: str) -> int:
    low, high = RANGES[key]
    return validate.whole(
        key, config[key], error=ConfigurationError, minimum=int(low), maximum=int(high)
    )
