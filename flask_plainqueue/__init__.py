"""flask-plainqueue: a persistent background task queue in the app's own SQL
database."""

from __future__ import annotations

import importlib
import typing as t

if t.TYPE_CHECKING:
    from .current import current_task as current_task
    from .current import CurrentTask as CurrentTask
    from .enqueue import TaskId as TaskId
    from .exceptions import ConfigurationError as ConfigurationError
    from .exceptions import DuplicateTaskName as DuplicateTaskName
    from .exceptions import InvalidArgument as InvalidArgument
    from .exceptions import PlainQueueError as PlainQueueError
    from .exceptions import Retry as Retry
    from .exceptions import TaskDataError as TaskDataError
    from .exceptions import TaskNotFound as TaskNotFound
    from .exceptions import TransferError as TransferError
    from .exceptions import UniqueTaskWaiting as UniqueTaskWaiting
    from .exceptions import UnknownTask as UnknownTask
    from .extension import PlainQueue as PlainQueue
    from .info import Health as Health
    from .info import Paused as Paused
    from .info import PeriodicInfo as PeriodicInfo
    from .info import QueueStatus as QueueStatus
    from .info import Reason as Reason
    from .info import TaskInfo as TaskInfo
    from .info import WorkerInfo as WorkerInfo
    from .schema import TaskState as TaskState
    from .stats import Stats as Stats
    from .stats import StatsCounts as StatsCounts
    from .stats import StatsMinute as StatsMinute
    from .task_options import TaskOptions as TaskOptions
    from .tasks import JSONValue as JSONValue
    from .tasks import TaskDefinition as TaskDefinition
    from .worker import Worker as Worker

# Imported on first use, not with the package: pytest imports the package for
# its plugin (flask_plainqueue.testing) in every run of every project where it
# is installed, and Flask and SQLAlchemy would cost that run most of a second.
_EXPORTS = {
    "ConfigurationError": "exceptions",
    "CurrentTask": "current",
    "current_task": "current",
    "DuplicateTaskName": "exceptions",
    "InvalidArgument": "exceptions",
    "JSONValue": "tasks",
    "PlainQueue": "extension",
    "PlainQueueError": "exceptions",
    "QueueStatus": "info",
    "Health": "info",
    "Paused": "info",
    "PeriodicInfo": "info",
    "Reason": "info",
    "WorkerInfo": "info",
    "Retry": "exceptions",
    "TaskDataError": "exceptions",
    "TaskDefinition": "tasks",
    "TaskId": "enqueue",
    "TaskInfo": "info",
    "TaskNotFound": "exceptions",
    "TaskOptions": "task_options",
    "TaskState": "schema",
    "Stats": "stats",
    "StatsCounts": "stats",
    "StatsMinute": "stats",
    "TransferError": "exceptions",
    "UniqueTaskWaiting": "exceptions",
    "UnknownTask": "exceptions",
    "Worker": "worker",
}

__all__ = [
    "ConfigurationError",
    "CurrentTask",
    "DuplicateTaskName",
    "Health",
    "InvalidArgument",
    "JSONValue",
    "Paused",
    "PeriodicInfo",
    "PlainQueue",
    "PlainQueueError",
    "QueueStatus",
    "Reason",
    "Retry",
    "Stats",
    "StatsCounts",
    "StatsMinute",
    "TaskDataError",
    "TaskDefinition",
    "TaskId",
    "TaskInfo",
    "TaskNotFound",
    "TaskOptions",
    "TaskState",
    "TransferError",
    "UniqueTaskWaiting",
    "UnknownTask",
    "Worker",
    "WorkerInfo",
    "current_task",
]


def __getattr__(name: str) -> t.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
