"""Task definitions: the decorated functions, their options and their names."""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import inspect
import pkgutil
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence

from . import validate
from .exceptions import ConfigurationError
from .exceptions import DuplicateTaskName
from .exceptions import UnknownTask
from .schedules import Schedule
from .task_options import FailureCallback
from .task_options import SuccessCallback
from .task_options import TaskOptionArgs
from .task_options import TaskOptions
from .typed import D
from .typed import JSONish
from .typed import PerformArgs
from .typed import TakesData
from .typed import TakesNoData

if t.TYPE_CHECKING:
    from typing_extensions import Unpack

#: A value that survives a JSON round trip: what ``perform`` accepts as ``data``.
#: ``Sequence`` and ``Mapping``, not the invariant ``list`` and ``dict``, so that
#: e.g. a ``dict[str, str]`` is accepted; ``perform`` checks the value itself.
JSONValue: t.TypeAlias = (
    None | bool | int | float | str | Sequence["JSONValue"] | Mapping[str, "JSONValue"]
)

P = t.ParamSpec("P")
R = t.TypeVar("R")


class Enqueuer(t.Protocol):
    """What a task definition needs of its queue: to store a task for it."""

    def perform(
        self,
        task: TaskDefinition[t.Any, t.Any],
        data: JSONish = None,
        **options: Unpack[PerformArgs],
    ) -> int: ...


class TaskDefinition(t.Generic[P, R]):
    """A function registered with :meth:`PlainQueue.task`.

    Calling it runs the function now, in the caller's thread; :meth:`perform`
    stores a task for a worker to run.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        queue: Enqueuer,
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

    @t.overload
    def perform(self: TakesData[D], data: D, **options: Unpack[PerformArgs]) -> int: ...

    @t.overload
    def perform(
        self: TakesData[None] | TakesNoData,
        data: None = None,
        **options: Unpack[PerformArgs],
    ) -> int: ...

    # ``self: Any``: the overloads' self types are protocols, which the class
    # matches only structurally.
    def perform(
        self: t.Any, data: JSONish = None, **options: Unpack[PerformArgs]
    ) -> int:
        """Store a task for this definition; see :meth:`PlainQueue.perform`.

        ``D`` is the type of the function's parameter: type checkers check
        ``data`` against it, and a function that takes no argument takes no
        data (see :ref:`type-checking`).
        """
        queue: Enqueuer = self._queue
        return queue.perform(self, data, **options)

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
        #: Changes whenever a definition is added, so what is built from the
        #: definitions can be kept until then.
        self.version = 0

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
        self.version += 1

    def get(self, name: str) -> TaskDefinition[t.Any, t.Any]:
        """The definition named ``name``.

        :raises UnknownTask: nothing is registered under ``name``.
        """
        try:
            return self._tasks[name]
        except (KeyError, TypeError):
            raise UnknownTask(
                f"No task named {name!r} is registered. Import the module that"
                " defines it, e.g. with PLAINQUEUE_TASKS."
            ) from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._tasks

    def __iter__(self) -> Iterator[TaskDefinition[t.Any, t.Any]]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._tasks)

    def queues(self) -> set[str]:
        """The queues the registered definitions declare."""
        return {d.options.queue for d in self._tasks.values()}


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
        self, func: None = None, /, **options: Unpack[TaskOptionArgs]
    ) -> Callable[[Callable[P, R]], TaskDefinition[P, R]]: ...

    def task(
        self,
        func: Callable[P, R] | None = None,
        /,
        **options: Unpack[TaskOptionArgs],
    ) -> TaskDefinition[P, R] | Callable[[Callable[P, R]], TaskDefinition[P, R]]:
        """Register a function as a task definition; usable bare (``@queue.task``)
        or with options.

        :param name: stored in each row; default ``module.qualname``. Set it, so
            renaming the function cannot orphan waiting tasks.
        :param success: ``success(data)`` after a successful run; its database
            writes commit together with the row's removal.
        :param failure: ``failure(data, exception)`` after each failed attempt.
        :param options: the other options, described on :class:`TaskOptions`:
            ``batch_size``, ``max_retries``, ``retry_interval``,
            ``retry_backoff``, ``retry_jitter``, ``retry_max_delay``,
            ``retry_on``, ``poll_interval``, ``queue``, ``priority``,
            ``timeout`` and ``atomic``.
        :raises DuplicateTaskName: the name is taken by another function.
        :raises ConfigurationError: an option is out of range or unknown.
        """
        decorator = self._decorator(options, schedule=None, catch_up=True)
        return decorator if func is None else decorator(func)

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: datetime.timedelta | None = None,
        tz: str | None = None,
        catch_up: bool = True,
        **options: Unpack[TaskOptionArgs],
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

        :raises ConfigurationError: a bad or never-matching cron expression,
            ``every`` not positive, both or neither given, an unknown ``tz``.
        """
        schedule = Schedule(cron=cron, every=every, tz=tz)
        validate.flag("catch_up", catch_up, error=ConfigurationError)
        options.setdefault("max_retries", 0)
        return self._decorator(options, schedule=schedule, catch_up=catch_up)

    def _decorator(
        self,
        options: TaskOptionArgs,
        *,
        schedule: Schedule | None,
        catch_up: bool,
    ) -> Callable[[Callable[P, R]], TaskDefinition[P, R]]:
        args: dict[str, t.Any] = dict(options)
        name: str | None = args.pop("name", None)
        success: SuccessCallback | None = args.pop("success", None)
        failure: FailureCallback | None = args.pop("failure", None)
        unknown = set(args) - {f.name for f in dataclasses.fields(TaskOptions)}
        if unknown:
            raise ConfigurationError(
                f"Unknown task option(s): {', '.join(sorted(unknown))}."
            )
        task_options = TaskOptions(**args)
        if name is not None:
            validate.text("name", name, error=ConfigurationError)
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
                t.cast(Enqueuer, self),
                f,
                name=name
                or validate.text(
                    "name (module.qualname)", default_name(f), error=ConfigurationError
                ),
                options=task_options,
                success=success,
                failure=failure,
                schedule=schedule,
                catch_up=catch_up,
            )
            self.check_definition(definition)
            self.registry.add(definition)
            return definition

        return decorator

    def check_definition(self, definition: TaskDefinition[t.Any, t.Any]) -> None:
        """Refuse a definition that cannot work where the queue stores its tasks
        (called before it is registered).

        :raises ConfigurationError: it cannot work.
        """
