"""What a type checker knows of a task's data: the types that let ``perform``
be checked against the parameter of the task's function (docs/tasks.rst, "Type
checking"), and ``perform``'s keyword arguments.

They check nothing at run time: ``perform`` still checks there that the data
is JSON.
"""

from __future__ import annotations

import datetime
import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence

if t.TYPE_CHECKING:
    # Type-only back edge: task_options is in a layer above this module.
    from .task_options import TaskOptions

#: What a task's data may be typed as: a JSON value, read as loosely as a
#: TypedDict needs (a TypedDict is a ``Mapping[str, object]``, not a
#: ``Mapping[str, JSONValue]``), so that e.g. a set or a model is refused.
JSONish: t.TypeAlias = (
    None | bool | int | float | str | Sequence[object] | Mapping[str, object]
)

#: The data type of one task function's parameter.
D = t.TypeVar("D", bound=JSONish)
D_contra = t.TypeVar("D_contra", contravariant=True)


class TakesData(t.Protocol[D_contra]):
    """A task definition whose function takes one argument of type
    ``D_contra``, such as ``TaskDefinition[[Welcome], None]``."""

    @property
    def name(self) -> str: ...

    @property
    def options(self) -> TaskOptions: ...

    def __call__(self, data: D_contra, /) -> t.Any: ...


class TakesNoData(t.Protocol):
    """A task definition whose function can be called without an argument (a
    periodic task's, or one whose parameter has a default)."""

    @property
    def name(self) -> str: ...

    @property
    def options(self) -> TaskOptions: ...

    def __call__(self) -> t.Any: ...


class PerformArgs(t.TypedDict, total=False):
    """The keyword arguments of :meth:`~flask_plainqueue.PlainQueue.perform`
    (described there)."""

    commit: bool
    delay: float | datetime.timedelta | None
    run_at: datetime.datetime | None
    priority: int | None
    unique_key: str | None


class PerformManyArgs(t.TypedDict, total=False):
    """The keyword arguments of
    :meth:`~flask_plainqueue.PlainQueue.perform_many` (described there)."""

    commit: bool
    delay: float | datetime.timedelta | None
    run_at: datetime.datetime | None
    priority: int | None


class _Deferred:
    """Never instantiated; see :data:`DataFor`."""


#: The ``data`` of ``queue.perform(task, data)``: ``D``, once ``D`` is known
#: from ``task``. The callable member accepts nothing anyone passes (it takes a
#: private class and never returns); it is there because mypy infers an
#: argument whose type holds a callable in a second pass, with ``D`` already
#: solved from ``task``, so a dict literal is read as the task's TypedDict
#: (python/mypy#19201: with a plain ``D`` it is ``dict[str, ...]``, and the call
#: fails).
DataFor: t.TypeAlias = D | Callable[[_Deferred, D], t.NoReturn]
#: The ``items`` of ``queue.perform_many(task, items)``, as :data:`DataFor`.
ItemsFor: t.TypeAlias = Iterable[D | Callable[[_Deferred, D], t.NoReturn]]
