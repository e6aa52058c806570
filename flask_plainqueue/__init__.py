"""flask-plainqueue: a persistent background task queue in the app's own SQL
database."""

from __future__ import annotations

from .exceptions import ConfigurationError
from .exceptions import DuplicateTaskName
from .exceptions import PlainQueueError
from .exceptions import Retry
from .exceptions import TaskDataError
from .exceptions import TaskNotFound
from .exceptions import UnknownTask
from .extension import PlainQueue
from .models import TaskState
from .tasks import JSONValue
from .tasks import TaskDefinition
from .worker import Worker

__all__ = [
    "ConfigurationError",
    "DuplicateTaskName",
    "JSONValue",
    "PlainQueue",
    "PlainQueueError",
    "Retry",
    "TaskDataError",
    "TaskDefinition",
    "TaskNotFound",
    "TaskState",
    "UnknownTask",
    "Worker",
]
