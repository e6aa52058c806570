"""The stored tasks as the public API shows them: :class:`TaskInfo`,
:class:`QueueStatus`, and the helpers that format them for people and parse
ids written by people (no I/O)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import typing as t

from .schema import TaskState
from .validate import INT64

#: The states in the order the CLI and dashboard show them.
STATES: tuple[TaskState, ...] = (
    TaskState.PENDING,
    TaskState.SCHEDULED,
    TaskState.RUNNING,
    TaskState.SUCCEEDED,
    TaskState.DEAD,
)


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """One stored task, as :meth:`~flask_plainqueue.PlainQueue.get` returns it.

    .. versionadded:: 0.1
    """

    #: The task's id, as :meth:`~flask_plainqueue.PlainQueue.perform` returned it.
    id: int
    name: str
    queue: str
    priority: int
    state: TaskState
    #: The stored JSON text of the task's data.
    data: str | None
    created: datetime.datetime
    #: When it is (or was) due; while running, when its lease expires.
    run_at: datetime.datetime
    #: Claims so far (attempts started).
    attempts: int
    #: Failed attempts counted against ``max_retries``.
    failed_nr: int
    failed_last: datetime.datetime | None
    #: The last error: type, message and traceback.
    error: str | None
    #: The worker holding the task (``host:pid:random``), if claimed.
    lease_owner: str | None
    unique_key: str | None
    #: The stored JSON text of a kept succeeded task's return value (see
    #: :attr:`result`).
    result_json: str | None = None
    #: The stored JSON text of the last progress the task reported (see
    #: :attr:`progress`).
    progress_json: str | None = None
    #: When it succeeded (kept succeeded tasks only).
    finished: datetime.datetime | None = None
    #: Columns whose stored value could not be read (a hand-written row), with
    #: that value as text; their fields above hold a placeholder (0, or
    #: 1970-01-01 for a timestamp).
    invalid: t.Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: It is pending (due) and waits only because its task name or its queue
    #: is paused (see :meth:`~flask_plainqueue.PlainQueue.pause`). A scheduled
    #: task of a paused name is marked once it is due.
    paused: bool = False

    @property
    def result(self) -> t.Any:
        """The task's return value, decoded (``None`` until it succeeds, when it
        is not kept, or when it returned something that is not JSON).

        .. versionadded:: 0.1
        """
        return _decoded(self.result_json)

    @property
    def progress(self) -> t.Any:
        """The last value the task reported with
        ``current_task.report_progress``, decoded, or ``None``.

        .. versionadded:: 0.1
        """
        return _decoded(self.progress_json)

    @property
    def result_pretty(self) -> str | None:
        """The result as indented JSON, or ``None`` if none is stored."""
        return None if self.result_json is None else pretty_json(self.result_json)

    @property
    def progress_pretty(self) -> str | None:
        """The progress as indented JSON, or ``None`` if none was reported."""
        return None if self.progress_json is None else pretty_json(self.progress_json)

    @property
    def data_pretty(self) -> str:
        """The data as indented JSON (the raw text if it is not valid JSON)."""
        return "null" if self.data is None else pretty_json(self.data)

    @property
    def error_summary(self) -> str:
        """The first line of the last error's ``Type: message`` part, or ``""``."""
        return error_summary(self.error)

    def as_dict(self) -> dict[str, t.Any]:
        """A JSON-friendly dict (datetimes as ISO 8601, data decoded if it can be)."""
        result = dataclasses.asdict(self)
        result["invalid"] = dict(self.invalid)
        result["state"] = self.state.value
        for key in ("created", "run_at", "failed_last", "finished"):
            value = result[key]
            result[key] = None if value is None else value.isoformat()
        del result["result_json"], result["progress_json"]
        result["result"] = self.result
        result["progress"] = self.progress
        try:
            result["data"] = None if self.data is None else json.loads(self.data)
        except (ValueError, RecursionError):
            pass
        return result


@dataclasses.dataclass(frozen=True)
class Paused:
    """The paused queues and task names, as
    :meth:`~flask_plainqueue.PlainQueue.paused` returns them.

    .. versionadded:: 0.1
    """

    queues: frozenset[str] = frozenset()
    tasks: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.queues or self.tasks)

    def holds(self, name: str, queue: str) -> bool:
        """Whether a task ``name`` of ``queue`` waits because of a pause."""
        return name in self.tasks or queue in self.queues

    def as_dict(self) -> dict[str, list[str]]:
        """``{"queues": [...], "tasks": [...]}``, each sorted."""
        return {"queues": sorted(self.queues), "tasks": sorted(self.tasks)}


@dataclasses.dataclass(frozen=True)
class QueueStatus:
    """Counts per task name and state, and how far behind the queue is.

    .. versionadded:: 0.1
    """

    #: ``{name: {state: count}}`` with every state present for each name.
    counts: dict[str, dict[TaskState, int]]
    #: Seconds the longest-waiting due task has been due, or ``None``.
    oldest_pending_age: float | None
    #: The id of that task.
    oldest_pending_id: int | None
    #: ``{worker id: running tasks}`` for workers holding unexpired leases.
    workers: dict[str, int]
    #: ``{queue: {name: {state: count}}}``: :attr:`counts` split by queue.
    queues: dict[str, dict[str, dict[TaskState, int]]] = dataclasses.field(
        default_factory=dict
    )
    #: The queue the status was limited to, or ``None`` for all.
    queue: str | None = None
    #: The paused queues and task names (all of them, whatever ``queue``).
    paused: Paused = dataclasses.field(default_factory=Paused)

    @property
    def totals(self) -> dict[TaskState, int]:
        """Counts per state over all names."""
        return {s: sum(c[s] for c in self.counts.values()) for s in STATES}

    def as_dict(self) -> dict[str, t.Any]:
        """A JSON-friendly dict, as ``flask queue status --json`` prints it."""
        return {
            "tasks": {
                name: {s.value: n for s, n in counts.items()}
                for name, counts in self.counts.items()
            },
            "total": {s.value: n for s, n in self.totals.items()},
            "oldest_pending_age": self.oldest_pending_age,
            "oldest_pending_id": self.oldest_pending_id,
            "workers": self.workers,
            "queues": {
                queue: {
                    name: {s.value: n for s, n in counts.items()}
                    for name, counts in names.items()
                }
                for queue, names in self.queues.items()
            },
            "queue": self.queue,
            "paused": self.paused.as_dict(),
        }


@dataclasses.dataclass(frozen=True)
class PeriodicInfo:
    """A registered periodic task, its schedule and its ticks, as
    :meth:`~flask_plainqueue.PlainQueue.periodic_tasks` returns it.

    .. versionadded:: 0.1
    """

    name: str
    queue: str
    #: The schedule as written: the cron expression, or ``every`` and the
    #: interval (``every 5m``).
    schedule: str
    #: The cron expression, or ``None`` for an interval.
    cron: str | None
    #: The interval in seconds, or ``None`` for a cron expression.
    every: float | None
    #: The cron expression's time zone (``None``: UTC).
    tz: str | None
    #: Whether a tick missed while no worker ran is run late.
    catch_up: bool
    #: The last tick a worker enqueued (or skipped), or ``None`` before the
    #: first tick a worker saw.
    last_tick: datetime.datetime | None
    #: The schedule's first tick after now, or ``None`` if it has none.
    next_tick: datetime.datetime | None
    #: Its task name or its queue is paused: its ticks are not enqueued.
    paused: bool = False

    def as_dict(self) -> dict[str, t.Any]:
        """A JSON-friendly dict (datetimes as ISO 8601 UTC), as ``flask queue
        periodic --json`` prints it."""
        result = dataclasses.asdict(self)
        for key in ("last_tick", "next_tick"):
            value = result[key]
            result[key] = None if value is None else value.isoformat()
        return result


def pretty_json(text: str) -> str:
    """Stored JSON text indented (as it is if it is not valid JSON)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return displayable(json.dumps(value, indent=2, ensure_ascii=False))


def _decoded(text: str | None) -> t.Any:
    """Stored JSON text decoded; text that is not JSON (a hand-written row) as
    it is."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def error_summary(error: str | None) -> str:
    """The first line of the ``Type: message`` part of a stored error.

    A stored error is a formatted traceback: its frames are indented, so the
    exception itself starts after the last indented line.
    """
    if not error:
        return ""
    lines = error.rstrip("\n").splitlines()
    start = 0
    for index, line in enumerate(lines):
        if line.startswith(" ") or line.startswith("Traceback (most recent call last)"):
            start = index + 1
    rest = [line for line in lines[start:] if line.strip()]
    if not rest:
        return lines[-1].strip()
    return rest[0].strip()


def format_age(seconds: float) -> str:
    """``seconds`` as a short age such as ``45s``, ``3m 5s``, ``2h 1m``, ``3d 4h``."""
    seconds = int(seconds)
    for unit, size, sub, sub_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if seconds >= size:
            whole, rest = divmod(seconds, size)
            part = rest // sub_size
            return f"{whole}{unit} {part}{sub}" if part else f"{whole}{unit}"
    return f"{seconds}s"


def valid_id(task_id: object) -> int | None:
    """``task_id`` if it is an int that can be a task id, else ``None`` (so the
    caller reports "not found" instead of a database error)."""
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        return None
    return task_id if 0 < task_id <= INT64[1] else None


def parse_id(text: str) -> int | None:
    """The task id written in ``text`` (a CLI argument or a URL part), or
    ``None`` if it cannot be one."""
    text = text.strip()
    if not text.isdigit() or not text.isascii() or len(text) > 19:
        return None
    return valid_id(int(text))


def displayable(value: object) -> str:
    """``value`` as text that can be written as UTF-8 (a lone surrogate in a
    hand-written row shown as its escape), for the CLI and the dashboard."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


#: A worker's states as :class:`WorkerInfo` shows them.
WORKER_STATES = ("running", "stopping", "lost")


def _iso(value: datetime.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclasses.dataclass(frozen=True)
class WorkerRecord:
    """A worker's row in the workers table, as it registered itself.

    .. versionadded:: 0.1
    """

    #: Its id (``host:pid:random``), the ``lease_owner`` of what it runs.
    id: str
    host: str
    pid: int
    #: ``embedded`` (in a web process) or ``process`` (``flask queue work``).
    kind: str
    #: The queues it serves; ``None``: every queue.
    queues: tuple[str, ...] | None
    #: The task names it can run.
    tasks: tuple[str, ...]
    concurrency: int
    #: The flask-plainqueue version it runs.
    version: str
    #: ``running`` or ``stopping`` as stored; :class:`WorkerInfo` also says
    #: ``lost`` (no heartbeat for longer than ``PLAINQUEUE_WORKER_TIMEOUT``).
    state: str
    started: datetime.datetime
    heartbeat: datetime.datetime


@dataclasses.dataclass(frozen=True)
class WorkerInfo(WorkerRecord):
    """A registered worker with what the database says of it now, as
    :meth:`~flask_plainqueue.PlainQueue.workers` returns it.

    .. versionadded:: 0.1
    """

    #: Seconds since its last heartbeat.
    heartbeat_age: float
    #: The ids of the tasks it holds under an unexpired lease.
    running: tuple[int, ...]

    @property
    def alive(self) -> bool:
        """Whether it is running (not stopping, not lost)."""
        return self.state == "running"

    def serves(self, queue: str) -> bool:
        """Whether it claims tasks of ``queue``."""
        return self.queues is None or queue in self.queues

    def as_dict(self) -> dict[str, t.Any]:
        """A JSON-friendly dict, as ``flask queue workers --json`` prints it."""
        result = dataclasses.asdict(self)
        result["queues"] = None if self.queues is None else list(self.queues)
        result["tasks"] = list(self.tasks)
        result["running"] = list(self.running)
        result["started"] = _iso(self.started)
        result["heartbeat"] = _iso(self.heartbeat)
        return result


@dataclasses.dataclass(frozen=True)
class Health:
    """Whether live workers serve the queues and due tasks get run, as
    :meth:`~flask_plainqueue.PlainQueue.health` returns it.

    .. versionadded:: 0.1
    """

    #: Every condition holds.
    ok: bool
    #: One line per failed condition (empty when ``ok``).
    problems: tuple[str, ...]
    #: Live workers (running, not stopping or lost).
    workers: int
    #: Per queue asked about: the live workers serving it.
    queues: dict[str, int]
    #: Seconds the longest-waiting due task (not paused) has been due.
    oldest_due_age: float | None
    #: The id of that task.
    oldest_due_id: int | None

    def as_dict(self) -> dict[str, t.Any]:
        """A JSON-friendly dict."""
        result = dataclasses.asdict(self)
        result["problems"] = list(self.problems)
        return result


#: The reason codes :class:`Reason` gives, in the order they are checked.
REASON_CODES = (
    "succeeded",
    "dead",
    "running",
    "leased-by-lost-worker",
    "backing-off",
    "scheduled",
    "queue-paused",
    "task-paused",
    "no-worker",
    "unknown-task",
    "waiting-behind",
    "pending",
    "not-found",
)


@dataclasses.dataclass(frozen=True)
class Reason:
    """Why a task is (not) running, as :meth:`~flask_plainqueue.PlainQueue.why`
    returns it: one code of :data:`REASON_CODES` and a sentence.

    .. versionadded:: 0.1
    """

    task_id: int
    code: str
    message: str
    #: The facts behind it (e.g. ``owner``, ``lease_ends``, ``ahead``).
    details: t.Mapping[str, t.Any] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def as_dict(self) -> dict[str, t.Any]:
        """A JSON-friendly dict."""
        details = {
            k: v.isoformat() if isinstance(v, datetime.datetime) else v
            for k, v in self.details.items()
        }
        return {
            "id": self.task_id,
            "code": self.code,
            "message": self.message,
            "details": details,
        }
