"""flask-plainqueue: a persistent background task queue in the app's own SQL
database."""

from __future__ import annotations

from .current import current_task
from .current import CurrentTask
from .enqueue import TaskId
from .exceptions import ConfigurationError
from .exceptions import DuplicateTaskName
from .exceptions import InvalidArgument
from .exceptions import PlainQueueError
from .exceptions import Retry
from .exceptions import TaskDataError
from .exceptions import TaskNotFound
from .exceptions import TransferError
from .exceptions import UniqueTaskWaiting
from .exceptions import UnknownTask
from .extension import PlainQueue
from .info import Health
from .info import PeriodicInfo
from .info import QueueStatus
from .info import Reason
from .info import TaskInfo
from .info import WorkerInfo
from .schema import TaskState
from .tasks import JSONValue
from .tasks import TaskDefinition
from .tasks import TaskOptions
from .worker import Worker

__all__ = [
    "ConfigurationError",
    "CurrentTask",
    "DuplicateTaskName",
    "Health",
    "InvalidArgument",
    "JSONValue",
    "PeriodicInfo",
    "PlainQueue",
    "PlainQueueError",
    "QueueStatus",
    "Reason",
    "Retry",
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
