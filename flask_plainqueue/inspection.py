"""Reading and administering stored tasks: the queries behind ``flask queue``
and the dashboard.

Part of the storage layer: every function takes a :class:`~.storage.Storage`
(engine and table), builds its statements with SQLAlchemy Core, and never
touches ``current_app``. A task's :class:`~.models.TaskState` is derived from
its row at a given time ``now``:

- ``dead``: ``status`` is ``'dead'`` (out of retries);
- ``running``: claimed (``lease_owner`` set) and the lease has not expired
  (``run_at > now``);
- ``pending``: due (``run_at <= now``), including a row whose lease expired;
- ``scheduled``: waiting for a later ``run_at`` (a delay or a retry back-off).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import typing as t
from collections.abc import Collection
from collections.abc import Sequence

import sqlalchemy as sa

from .exceptions import PlainQueueError
from .models import STATUS_DEAD
from .models import STATUS_QUEUED
from .models import TaskState

if t.TYPE_CHECKING:
    from .storage import Storage

UTC = datetime.timezone.utc

#: The states in the order the CLI and dashboard show them.
STATES: tuple[TaskState, ...] = (
    TaskState.PENDING,
    TaskState.SCHEDULED,
    TaskState.RUNNING,
    TaskState.DEAD,
)

#: Rows deleted per transaction by :func:`purge_dead`, so a big purge never
#: holds the write lock for long.
PURGE_BATCH = 1000


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(UTC)


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """One stored task as the CLI and dashboard show it.

    .. versionadded:: 0.1
    """

    #: The task's id, as :meth:`~flask_plainqueue.PlainQueue.perform` returned it.
    id: str
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

    @property
    def data_pretty(self) -> str:
        """The data as indented JSON (the raw text if it is not valid JSON)."""
        if self.data is None:
            return "null"
        try:
            value = json.loads(self.data)
        except ValueError:
            return self.data
        return json.dumps(value, indent=2, ensure_ascii=False)

    @property
    def error_summary(self) -> str:
        """The first line of the last error's ``Type: message`` part, or ``""``."""
        return error_summary(self.error)

    def as_dict(self) -> dict[str, t.Any]:
        """A JSON-friendly dict (datetimes as ISO 8601, data decoded if it can be)."""
        result = dataclasses.asdict(self)
        result["state"] = self.state.value
        for key in ("created", "run_at", "failed_last"):
            value = result[key]
            result[key] = None if value is None else value.isoformat()
        try:
            result["data"] = None if self.data is None else json.loads(self.data)
        except ValueError:
            pass
        return result


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
    oldest_pending_id: str | None
    #: ``{worker id: running tasks}`` for workers holding unexpired leases.
    workers: dict[str, int]

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
        }


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


# -- state ------------------------------------------------------------------


def _state_expr(storage: Storage, now: datetime.datetime) -> sa.ColumnElement[str]:
    c = storage.table.c
    return sa.case(
        (c.status == STATUS_DEAD, TaskState.DEAD.value),
        (
            sa.and_(c.lease_owner.is_not(None), c.run_at > now),
            TaskState.RUNNING.value,
        ),
        (c.run_at <= now, TaskState.PENDING.value),
        else_=TaskState.SCHEDULED.value,
    )


def _not_running(storage: Storage, now: datetime.datetime) -> sa.ColumnElement[bool]:
    c = storage.table.c
    return sa.or_(c.status == STATUS_DEAD, c.lease_owner.is_(None), c.run_at <= now)


def _columns(storage: Storage, now: datetime.datetime) -> list[sa.ColumnElement[t.Any]]:
    c = storage.table.c
    return [
        c.id,
        c.name,
        c.queue,
        c.priority,
        _state_expr(storage, now).label("state"),
        c.data,
        c.created,
        c.run_at,
        c.attempts,
        c.failed_nr,
        c.failed_last,
        c.failed_error,
        c.lease_owner,
        c.unique_key,
    ]


def _info(row: sa.Row[t.Any]) -> TaskInfo:
    m = row._mapping
    return TaskInfo(
        id=str(m["id"]),
        name=m["name"],
        queue=m["queue"],
        priority=m["priority"],
        state=TaskState(m["state"]),
        data=m["data"],
        created=m["created"],
        run_at=m["run_at"],
        attempts=m["attempts"],
        failed_nr=m["failed_nr"],
        failed_last=m["failed_last"],
        error=m["failed_error"],
        lease_owner=m["lease_owner"],
        unique_key=m["unique_key"],
    )


def parse_id(task_id: str | int) -> int | None:
    """The integer id in ``task_id``, or ``None`` if it cannot be one (so the
    caller reports "not found" instead of a database error)."""
    if isinstance(task_id, bool):
        return None
    if isinstance(task_id, int):
        return task_id
    text = str(task_id).strip()
    if not text.isdigit() or len(text) > 18:
        return None
    return int(text)


# -- reading ----------------------------------------------------------------


def status(storage: Storage, now: datetime.datetime | None = None) -> QueueStatus:
    """Counts per name and state, the oldest due task, and busy workers."""
    now = now or utcnow()
    c = storage.table.c
    state = _state_expr(storage, now).label("state")
    counts_stmt = (
        sa.select(c.name, state, sa.func.count().label("n"))
        .group_by(c.name, state)
        .order_by(c.name)
    )
    oldest_stmt = (
        sa.select(c.id, c.run_at)
        .where(c.status == STATUS_QUEUED, c.run_at <= now)
        .order_by(c.run_at, c.id)
        .limit(1)
    )
    workers_stmt = (
        sa.select(c.lease_owner, sa.func.count())
        .where(c.status == STATUS_QUEUED, c.lease_owner.is_not(None), c.run_at > now)
        .group_by(c.lease_owner)
        .order_by(c.lease_owner)
    )
    counts: dict[str, dict[TaskState, int]] = {}
    with storage.engine.connect() as conn:
        for name, state_value, n in conn.execute(counts_stmt):
            per_name = counts.setdefault(name, {s: 0 for s in STATES})
            per_name[TaskState(state_value)] += n
        oldest = conn.execute(oldest_stmt).first()
        workers = {owner: n for owner, n in conn.execute(workers_stmt)}
    age = None if oldest is None else max(0.0, (now - oldest.run_at).total_seconds())
    return QueueStatus(
        counts=dict(sorted(counts.items())),
        oldest_pending_age=age,
        oldest_pending_id=None if oldest is None else str(oldest.id),
        workers=workers,
    )


def _filtered(
    storage: Storage,
    stmt: sa.Select[t.Any],
    now: datetime.datetime,
    states: Collection[TaskState] | None,
    name: str | None,
) -> sa.Select[t.Any]:
    c = storage.table.c
    if states:
        values = [TaskState(s).value for s in states]
        if values == [TaskState.DEAD.value]:
            # The common "failed" view uses the status column directly.
            stmt = stmt.where(c.status == STATUS_DEAD)
        else:
            stmt = stmt.where(_state_expr(storage, now).in_(values))
    if name:
        stmt = stmt.where(c.name == name)
    return stmt


def list_tasks(
    storage: Storage,
    *,
    states: Collection[TaskState] | None = None,
    name: str | None = None,
    limit: int = 50,
    offset: int = 0,
    now: datetime.datetime | None = None,
) -> list[TaskInfo]:
    """Tasks in ``states`` (default all) of task ``name`` (default all).

    Dead tasks come newest failure first; others in claim order (priority,
    due time, id).
    """
    now = now or utcnow()
    c = storage.table.c
    stmt = _filtered(storage, sa.select(*_columns(storage, now)), now, states, name)
    if states and set(states) == {TaskState.DEAD}:
        stmt = stmt.order_by(c.failed_last.desc(), c.id.desc())
    else:
        stmt = stmt.order_by(c.priority.desc(), c.run_at, c.id)
    stmt = stmt.limit(max(0, limit)).offset(max(0, offset))
    with storage.engine.connect() as conn:
        return [_info(row) for row in conn.execute(stmt)]


def count_tasks(
    storage: Storage,
    *,
    states: Collection[TaskState] | None = None,
    name: str | None = None,
    now: datetime.datetime | None = None,
) -> int:
    """How many tasks :func:`list_tasks` would list without a limit."""
    now = now or utcnow()
    stmt = _filtered(
        storage,
        sa.select(sa.func.count()).select_from(storage.table),
        now,
        states,
        name,
    )
    with storage.engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def task_names(storage: Storage) -> list[str]:
    """The distinct task names stored, sorted."""
    c = storage.table.c
    with storage.engine.connect() as conn:
        return list(
            conn.execute(sa.select(c.name).distinct().order_by(c.name)).scalars()
        )


def get_task(
    storage: Storage, task_id: str | int, now: datetime.datetime | None = None
) -> TaskInfo | None:
    """One task, or ``None`` if no task has this id."""
    key = parse_id(task_id)
    if key is None:
        return None
    now = now or utcnow()
    stmt = sa.select(*_columns(storage, now)).where(storage.table.c.id == key)
    with storage.engine.connect() as conn:
        row = conn.execute(stmt).first()
    return None if row is None else _info(row)


# -- changing ---------------------------------------------------------------


class UniqueTaskWaiting(PlainQueueError):
    """The task has a ``unique_key`` and another task with that key waits."""


def retry(
    storage: Storage,
    task_ids: Sequence[str | int],
    now: datetime.datetime | None = None,
) -> list[str]:
    """Make tasks that are not running due now with their failure count reset;
    return the ids that were changed (not running, not gone), in order.

    Dead tasks come back to life; waiting ones are moved up to now. A task with
    a ``unique_key`` is skipped while another task with the same key waits
    (the unique index would refuse it): see :func:`retry_one`.
    """
    now = now or utcnow()
    keys = [k for k in (parse_id(i) for i in task_ids) if k is not None]
    if not keys:
        return []
    c = storage.table.c
    values = {
        "status": STATUS_QUEUED,
        "run_at": now,
        "failed_nr": 0,
        "lease_owner": None,
    }
    changed: list[int] = []
    with storage.write() as conn:
        base = (
            sa.update(storage.table).where(_not_running(storage, now)).values(**values)
        )
        # Rows without a unique key cannot conflict: one statement for all.
        changed.extend(
            conn.execute(
                base.where(c.id.in_(keys), c.unique_key.is_(None)).returning(c.id)
            ).scalars()
        )
        other = storage.table.alias("other")
        # One at a time, so two dead tasks with one key cannot both come back.
        keyed = base.where(
            ~sa.exists().where(
                other.c.name == c.name,
                other.c.unique_key == c.unique_key,
                other.c.status == STATUS_QUEUED,
                other.c.id != c.id,
            )
        ).returning(c.id)
        for key in keys:
            if key in changed:
                continue
            changed.extend(
                conn.execute(
                    keyed.where(c.id == key, c.unique_key.is_not(None))
                ).scalars()
            )
        if changed and storage.notifies:
            # Idle workers on other hosts take them at once (sent at commit).
            conn.execute(sa.select(sa.func.pg_notify(storage.channel, "")))
    order = {k: i for i, k in enumerate(keys)}
    return [str(k) for k in sorted(set(changed), key=order.__getitem__)]


def retry_one(
    storage: Storage, task_id: str | int, now: datetime.datetime | None = None
) -> bool:
    """Retry one task (see :func:`retry`); ``False`` if it runs or is gone.

    :raises UniqueTaskWaiting: the task has a ``unique_key`` that another
        waiting task holds.
    """
    now = now or utcnow()
    if retry(storage, [task_id], now):
        return True
    info = get_task(storage, task_id, now)
    if info is not None and info.state is not TaskState.RUNNING and info.unique_key:
        raise UniqueTaskWaiting(
            f"Task {info.id} ({info.name}) has unique_key {info.unique_key!r} and"
            " another task with that key is waiting; delete one of them first."
        )
    return False


def retry_dead(
    storage: Storage, *, name: str | None = None, now: datetime.datetime | None = None
) -> list[str]:
    """Retry every dead task (of task ``name``); return the ids retried."""
    now = now or utcnow()
    c = storage.table.c
    stmt = sa.select(c.id).where(c.status == STATUS_DEAD).order_by(c.id)
    if name:
        stmt = stmt.where(c.name == name)
    with storage.engine.connect() as conn:
        ids = list(conn.execute(stmt).scalars())
    retried: list[str] = []
    # Bounded transactions: a big retry never holds the write lock for long.
    for start in range(0, len(ids), PURGE_BATCH):
        retried.extend(retry(storage, ids[start : start + PURGE_BATCH], now))
    return retried


def delete(
    storage: Storage,
    task_ids: Sequence[str | int],
    now: datetime.datetime | None = None,
) -> list[str]:
    """Delete tasks that are not running; return the ids deleted, in order."""
    now = now or utcnow()
    keys = [k for k in (parse_id(i) for i in task_ids) if k is not None]
    if not keys:
        return []
    c = storage.table.c
    stmt = (
        sa.delete(storage.table)
        .where(c.id.in_(keys), _not_running(storage, now))
        .returning(c.id)
    )
    with storage.write() as conn:
        deleted = set(conn.execute(stmt).scalars())
    return [str(k) for k in keys if k in deleted]


def _dead_older_than(
    storage: Storage, older_than: float | None, now: datetime.datetime
) -> sa.ColumnElement[bool]:
    c = storage.table.c
    where = c.status == STATUS_DEAD
    if older_than is not None:
        cutoff = now - datetime.timedelta(seconds=older_than)
        where = sa.and_(where, sa.func.coalesce(c.failed_last, c.created) < cutoff)
    return where


def count_dead(
    storage: Storage,
    *,
    older_than: float | None = None,
    name: str | None = None,
    now: datetime.datetime | None = None,
) -> int:
    """How many dead tasks (of ``name``) failed more than ``older_than`` seconds ago."""
    now = now or utcnow()
    c = storage.table.c
    stmt = (
        sa.select(sa.func.count())
        .select_from(storage.table)
        .where(_dead_older_than(storage, older_than, now))
    )
    if name:
        stmt = stmt.where(c.name == name)
    with storage.engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def purge_dead(
    storage: Storage,
    *,
    older_than: float | None = None,
    name: str | None = None,
    now: datetime.datetime | None = None,
) -> int:
    """Delete dead tasks (of ``name``) whose last failure is more than
    ``older_than`` seconds ago (all dead tasks if ``None``), in batches of
    :data:`PURGE_BATCH` per transaction; return how many were deleted."""
    now = now or utcnow()
    c = storage.table.c
    where = _dead_older_than(storage, older_than, now)
    if name:
        where = sa.and_(where, c.name == name)
    batch = sa.select(c.id).where(where).order_by(c.id).limit(PURGE_BATCH)
    total = 0
    while True:
        with storage.write() as conn:
            ids = list(conn.execute(batch).scalars())
            if ids:
                conn.execute(sa.delete(storage.table).where(c.id.in_(ids), where))
        total += len(ids)
        if len(ids) < PURGE_BATCH:
            return total
