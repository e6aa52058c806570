"""Task definitions: the decorated functions, their options and their names."""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import inspect
import pkgutil
import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence

from .exceptions import ConfigurationError
from .exceptions import DuplicateTaskName
from .exceptions import UnknownTask

if t.TYPE_CHECKING:
    from .extension import PlainQueue
    from .schedules import Schedule

#: A value that survives a JSON round trip: what ``perform`` accepts as ``data``.
#: ``Sequence`` and ``Mapping``, not the invariant ``list`` and ``dict``, so that
#: e.g. a ``dict[str, str]`` is accepted; ``perform`` checks the value itself.
JSONValue: t.TypeAlias = (
    None | bool | int | float | str | Sequence["JSONValue"] | Mapping[str, "JSONValue"]
)

P = t.ParamSpec("P")
R = t.TypeVar("R")

SuccessCallback = Callable[[t.Any], object]
FailureCallback = Callable[[t.Any, BaseException], object]


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """How the worker runs one task definition."""

    batch_size: int = 1
    max_retries: int = 5
    retry_interval: float = 3.0
    retry_backoff: float = 1.0
    retry_jitter: float = 0.0
    retry_max_delay: float = 3600.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    poll_interval: float | None = None
    queue: str = "default"
    priority: int = 0
    timeout: float | None = None
    atomic: bool = False

    def __post_init__(self) -> None:
        if self.timeout is not None:
            _check_seconds("timeout", self.timeout, positive=True)
        if not isinstance(self.atomic, bool):
            raise ConfigurationError(
                f"atomic must be True or False, got {self.atomic!r}."
            )
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_int("max_retries", self.max_retries, minimum=0)
        _check_int("priority", self.priority, minimum=None)
        _check_seconds("retry_interval", self.retry_interval)
        _check_seconds("retry_max_delay", self.retry_max_delay)
        _check_seconds("retry_jitter", self.retry_jitter)
        if self.poll_interval is not None:
            _check_seconds("poll_interval", self.poll_interval, positive=True)
        if (
            isinstance(self.retry_backoff, bool)
            or not isinstance(self.retry_backoff, (int, float))
            or self.retry_backoff < 1
        ):
            raise ConfigurationError(
                f"retry_backoff must be a number of 1 or more, got {self.retry_backoff!r}."
            )
        if not isinstance(self.queue, str) or not self.queue:
            raise ConfigurationError(
                f"queue must be a non-empty string, got {self.queue!r}."
            )
        if not all(
            isinstance(e, type) and issubclass(e, BaseException) for e in self.retry_on
        ):
            raise ConfigurationError(
                f"retry_on must be a tuple of exception classes, got {self.retry_on!r}."
            )


def _check_int(name: str, value: object, *, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be a whole number, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{name} must be {minimum} or more, got {value!r}.")


def _check_seconds(name: str, value: object, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}.")
    if value < 0 or (positive and value == 0):
        raise ConfigurationError(f"{name} must not be negative or zero, got {value!r}.")


class TaskDefinition(t.Generic[P, R]):
    """A function registered with :meth:`PlainQueue.task`.

    Calling it runs the function now, in the caller's thread; :meth:`perform`
    stores a task for a worker to run.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        queue: PlainQueue,
        func: Callable[P, R],
        *,
        name: str,
        options: TaskOptions,
        success: SuccessCallback | None = None,
        failure: FailureCallback | None = None,
        schedule: Schedule | None = None,
        catch_up: bool = True,
    ) -> None:
        self._queue = queue
        #: The decorated function.
        self.func = func
        #: The name stored in each task row; the worker finds the function by it.
        self.name = name
        #: How the worker runs it.
        self.options = options
        #: Called with ``data`` after a successful run.
        self.success = success
        #: Called with ``data`` and the exception after each failed attempt.
        self.failure = failure
        #: Whether ``func`` is a coroutine function (run on an event loop).
        self.is_async = inspect.iscoroutinefunction(func)
        #: For periodic tasks: when they are due.
        self.schedule = schedule
        #: For periodic tasks: run once for ticks missed while no worker ran.
        self.catch_up = catch_up
        #: Whether ``func`` takes the data argument (periodic tasks may not).
        self.takes_data = _takes_one_argument(func)
        self.__wrapped__ = func
        self.__doc__ = func.__doc__
        self.__name__ = getattr(func, "__name__", name)
        self.__qualname__ = getattr(func, "__qualname__", name)
        self.__module__ = getattr(func, "__module__", __name__)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def perform(
        self,
        data: JSONValue = None,
        *,
        commit: bool = True,
        delay: float | datetime.timedelta | None = None,
        run_at: datetime.datetime | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
    ) -> str:
        """Store a task for this definition; see :meth:`PlainQueue.perform`."""
        return self._queue.perform(
            self,
            data,
            commit=commit,
            delay=delay,
            run_at=run_at,
            priority=priority,
            unique_key=unique_key,
        )

    def __repr__(self) -> str:
        return f"<TaskDefinition {self.name!r}>"


def _takes_one_argument(func: Callable[..., object]) -> bool:
    try:
        inspect.signature(func).bind(None)
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): assume the usual shape
        return True
    return True


def default_name(func: Callable[..., object]) -> str:
    """``module.qualname`` of ``func``, the default task name."""
    module = getattr(func, "__module__", None) or "__main__"
    qualname = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}.{qualname}"


class TaskRegistry:
    """Task definitions by name, for one :class:`PlainQueue`."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskDefinition[t.Any, t.Any]] = {}

    def add(self, definition: TaskDefinition[t.Any, t.Any]) -> None:
        """Register ``definition``.

        :raises DuplicateTaskName: another function already has its name.
        """
        existing = self._tasks.get(definition.name)
        if existing is not None and existing.func is not definition.func:
            raise DuplicateTaskName(
                f"A task named {definition.name!r} is already registered (by"
                f" {default_name(existing.func)}). Give one of them another"
                " name with @queue.task(name=...)."
            )
        self._tasks[definition.name] = definition

    def get(self, name: str) -> TaskDefinition[t.Any, t.Any]:
        """The definition named ``name``.

        :raises UnknownTask: nothing is registered under ``name``.
        """
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(
                f"No task named {name!r} is registered. Import the module that"
                " defines it, e.g. with PLAINQUEUE_TASKS."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[TaskDefinition[t.Any, t.Any]]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._tasks)


def import_task_modules(names: t.Iterable[str]) -> None:
    """Import each module; for a package, every module in it (recursively), so
    the tasks they define register themselves.

    :raises ConfigurationError: a name cannot be imported.
    """
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(
                f"PLAINQUEUE_TASKS names {name!r}, which cannot be imported: {exc}"
            ) from exc
        path = getattr(module, "__path__", None)
        if path is None:
            continue
        for info in pkgutil.walk_packages(path, prefix=f"{module.__name__}."):
            importlib.import_module(info.name)


class TaskDecorators:
    """``@queue.task`` and ``@queue.periodic``, mixed into
    :class:`~flask_plainqueue.PlainQueue`: they build task definitions and add
    them to its registry."""

    registry: TaskRegistry

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
            raise ConfigurationError(
                f"catch_up must be True or False, got {catch_up!r}."
            )

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
                t.cast("PlainQueue", self),
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
