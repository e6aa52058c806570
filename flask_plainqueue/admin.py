"""Reading and administering stored tasks: what the public read/admin API of
:class:`~flask_plainqueue.PlainQueue` (and through it ``flask queue`` and the
dashboard) runs.

Every function takes a :class:`~.store.Store`, builds its statements with
SQLAlchemy Core, and never touches ``current_app``. How a row's state is
worked out is in :mod:`.rows`.
"""

from __future__ import annotations

import datetime
import typing as t
from collections.abc import Collection
from collections.abc import Sequence

import sqlalchemy as sa

from . import rows
from .clock import as_utc
from .exceptions import UniqueTaskWaiting
from .info import QueueStatus
from .info import STATES
from .info import TaskInfo
from .info import valid_id
from .schema import STATUS_DEAD
from .schema import STATUS_QUEUED
from .schema import STATUS_SUCCEEDED
from .schema import TaskState
from .store import DELETE_BATCH

if t.TYPE_CHECKING:
    from .store import Store

#: Tasks changed per transaction by :func:`retry_dead`, so a big retry never
#: holds the write lock for long.
RETRY_BATCH = 1000


# -- reading ----------------------------------------------------------------


def status(
    store: Store, now: datetime.datetime | None = None, *, queue: str | None = None
) -> QueueStatus:
    """Counts per name, queue and state, the oldest due task, and busy workers
    (of ``queue``, default all)."""
    now = now or store.clock()
    c = store.table.c
    in_queue = [] if queue is None else [c.queue == queue]
    state = rows.state_expr(store, now).label("state")
    counts_stmt = (
        sa.select(c.name, c.queue, state, sa.func.count().label("n"))
        .where(*in_queue)
        .group_by(c.name, c.queue, state)
    )
    oldest_stmt = (
        sa.select(c.id, sa.type_coerce(c.run_at, sa.String).label("run_at"))
        .where(c.status == STATUS_QUEUED, c.run_at <= now, *in_queue)
        .order_by(c.run_at, c.id)
        .limit(1)
    )
    workers_stmt = (
        sa.select(c.lease_owner, sa.func.count())
        .where(
            c.status == STATUS_QUEUED,
            c.lease_owner.is_not(None),
            c.run_at > now,
            *in_queue,
        )
        .group_by(c.lease_owner)
        .order_by(c.lease_owner)
    )
    counts: dict[str, dict[TaskState, int]] = {}
    queues: dict[str, dict[str, dict[TaskState, int]]] = {}
    with store.read() as conn:
        for name, queue_name, state_value, n in conn.execute(counts_stmt):
            per_name = counts.setdefault(name, {s: 0 for s in STATES})
            per_name[TaskState(state_value)] += n
            per_queue = queues.setdefault(queue_name, {}).setdefault(
                name, {s: 0 for s in STATES}
            )
            per_queue[TaskState(state_value)] += n
        oldest = conn.execute(oldest_stmt).first()
        workers = {owner: n for owner, n in conn.execute(workers_stmt)}
    age = None
    if oldest is not None:
        run_at = oldest.run_at
        if not isinstance(run_at, datetime.datetime):
            try:
                run_at = datetime.datetime.fromisoformat(str(run_at))
            except ValueError:
                run_at = now
        age = max(0.0, (now - as_utc(run_at)).total_seconds())
    return QueueStatus(
        counts=dict(sorted(counts.items())),
        oldest_pending_age=age,
        oldest_pending_id=None if oldest is None else int(oldest.id),
        workers=workers,
        queues={q: dict(sorted(names.items())) for q, names in sorted(queues.items())},
        queue=queue,
    )


def last_ticks(store: Store) -> dict[str, datetime.datetime]:
    """``{periodic task name: its last tick}`` as the workers recorded them."""
    p = store.tables.periodic.c
    with store.read() as conn:
        ticks = conn.execute(sa.select(p.name, p.last_tick)).all()
    return {name: as_utc(tick) for name, tick in ticks}


def _conditions(
    store: Store,
    now: datetime.datetime,
    states: Collection[TaskState] | None,
    name: str | None,
    queue: str | None,
) -> list[sa.ColumnElement[bool]]:
    c = store.table.c
    where: list[sa.ColumnElement[bool]] = []
    if states:
        values = [TaskState(s).value for s in states]
        if values == [TaskState.DEAD.value]:
            # The common "failed" view uses the status column directly.
            where.append(c.status == STATUS_DEAD)
        elif values == [TaskState.SUCCEEDED.value]:
            where.append(c.status == STATUS_SUCCEEDED)
        else:
            where.append(rows.state_expr(store, now).in_(values))
    if name:
        where.append(c.name == name)
    if queue:
        where.append(c.queue == queue)
    return where


def tables_exist(store: Store) -> bool:
    """Whether the queue's tables exist (a missing one is a setup step not
    done yet: ``db.create_all()`` or a migration)."""
    try:
        with store.read() as conn:
            for table in (store.table, store.tables.periodic):
                conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1))
    except sa.exc.DBAPIError as exc:
        if store.is_missing_table(exc):
            return False
        raise
    return True


def _filtered(
    store: Store,
    stmt: sa.Select[t.Any],
    now: datetime.datetime,
    states: Collection[TaskState] | None,
    name: str | None,
    queue: str | None,
) -> sa.Select[t.Any]:
    return stmt.where(*_conditions(store, now, states, name, queue))


def list_tasks(
    store: Store,
    *,
    states: Collection[TaskState] | None = None,
    name: str | None = None,
    queue: str | None = None,
    limit: int = 50,
    offset: int = 0,
    now: datetime.datetime | None = None,
) -> list[TaskInfo]:
    """Tasks in ``states`` (default all) of task ``name`` and ``queue`` (default
    all). Dead tasks come newest failure first, succeeded ones newest first;
    others in claim order
    (priority, due time, id)."""
    now = now or store.clock()
    c = store.table.c
    stmt = _filtered(
        store, sa.select(*rows.columns(store, now)), now, states, name, queue
    )
    if states and set(states) == {TaskState.DEAD}:
        stmt = stmt.order_by(c.failed_last.desc(), c.id.desc())
    elif states and set(states) == {TaskState.SUCCEEDED}:
        stmt = stmt.order_by(c.finished.desc(), c.id.desc())
    else:
        stmt = stmt.order_by(c.priority.desc(), c.run_at, c.id)
    stmt = stmt.limit(max(0, limit)).offset(max(0, offset))
    with store.read() as conn:
        return [rows.info(row) for row in conn.execute(stmt)]


def count_tasks(
    store: Store,
    *,
    states: Collection[TaskState] | None = None,
    name: str | None = None,
    queue: str | None = None,
    now: datetime.datetime | None = None,
) -> int:
    """How many tasks :func:`list_tasks` would list without a limit."""
    now = now or store.clock()
    stmt = _filtered(
        store,
        sa.select(sa.func.count()).select_from(store.table),
        now,
        states,
        name,
        queue,
    )
    with store.read() as conn:
        return int(conn.execute(stmt).scalar_one())


def task_names(store: Store) -> list[str]:
    """The distinct task names stored, sorted."""
    c = store.table.c
    with store.read() as conn:
        return list(
            conn.execute(sa.select(c.name).distinct().order_by(c.name)).scalars()
        )


def get_task(
    store: Store, task_id: int, now: datetime.datetime | None = None
) -> TaskInfo | None:
    """One task, or ``None`` if no task has this id."""
    key = valid_id(task_id)
    if key is None:
        return None
    now = now or store.clock()
    stmt = sa.select(*rows.columns(store, now)).where(store.table.c.id == key)
    with store.read() as conn:
        row = conn.execute(stmt).first()
    return None if row is None else rows.info(row)


# -- changing ---------------------------------------------------------------


def retry(
    store: Store,
    task_ids: Sequence[int],
    now: datetime.datetime | None = None,
) -> list[int]:
    """Make tasks that are not running due now with their failure count reset;
    return the ids that were changed (not running, not gone), in order.

    Dead tasks come back to life; waiting ones are moved up to now; a
    succeeded one is left alone (perform it again instead). A task with
    a ``unique_key`` is skipped while another task with the same key waits
    (the unique index would refuse it): see :func:`retry_one`.
    """
    now = now or store.clock()
    keys = [k for k in (valid_id(i) for i in task_ids) if k is not None]
    if not keys:
        return []
    c = store.table.c
    values = {
        "status": STATUS_QUEUED,
        "run_at": now,
        "failed_nr": 0,
        "lease_owner": None,
    }
    changed: list[int] = []
    with store.write() as conn:
        base = (
            sa.update(store.table)
            .where(rows.not_running(store, now), c.status != STATUS_SUCCEEDED)
            .values(**values)
        )
        # Rows without a unique key cannot conflict: one statement for all.
        changed.extend(
            conn.execute(
                base.where(c.id.in_(keys), c.unique_key.is_(None)).returning(c.id)
            ).scalars()
        )
        other = store.table.alias("other")
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
        if changed:
            # Idle workers on other hosts take them at once (sent at commit).
            store.notify(conn)
    order = {k: i for i, k in enumerate(keys)}
    return sorted(set(changed), key=order.__getitem__)


def retry_one(store: Store, task_id: int, now: datetime.datetime | None = None) -> bool:
    """Retry one task (see :func:`retry`); ``False`` if it runs or is gone.

    :raises UniqueTaskWaiting: the task has a ``unique_key`` that another
        waiting task holds.
    """
    now = now or store.clock()
    if retry(store, [task_id], now):
        return True
    info = get_task(store, task_id, now)
    if info is not None and info.state is not TaskState.RUNNING and info.unique_key:
        raise UniqueTaskWaiting(
            f"Task {info.id} ({info.name}) has unique_key {info.unique_key!r} and"
            " another task with that key is waiting; delete one of them first."
        )
    return False


def retry_dead(
    store: Store, *, name: str | None = None, now: datetime.datetime | None = None
) -> list[int]:
    """Retry every dead task (of task ``name``); return the ids retried."""
    now = now or store.clock()
    c = store.table.c
    stmt = sa.select(c.id).where(store.statements.dead(before=None, name=name))
    with store.read() as conn:
        ids = sorted(conn.execute(stmt).scalars())
    retried: list[int] = []
    for start in range(0, len(ids), RETRY_BATCH):
        retried.extend(retry(store, ids[start : start + RETRY_BATCH], now))
    return retried


def delete(
    store: Store,
    task_ids: Sequence[int],
    now: datetime.datetime | None = None,
) -> list[int]:
    """Delete tasks that are not running; return the ids deleted, in order."""
    now = now or store.clock()
    keys = [k for k in (valid_id(i) for i in task_ids) if k is not None]
    if not keys:
        return []
    c = store.table.c
    stmt = (
        sa.delete(store.table)
        .where(c.id.in_(keys), rows.not_running(store, now))
        .returning(c.id)
    )
    with store.write() as conn:
        deleted = set(conn.execute(stmt).scalars())
        # Open streams of these tasks end now, not at their next look.
        store.notify_changed(conn, sorted(deleted))
    return [k for k in keys if k in deleted]


def delete_matching(
    store: Store,
    *,
    states: Collection[TaskState],
    name: str | None = None,
    queue: str | None = None,
    now: datetime.datetime | None = None,
    dry_run: bool = False,
) -> int:
    """Delete the tasks in ``states`` of task ``name`` and ``queue`` (default
    all), never a running one, :data:`~.store.DELETE_BATCH` rows per
    transaction; return how many, or with ``dry_run`` how many would be."""
    now = now or store.clock()
    if dry_run:
        return count_tasks(store, states=states, name=name, queue=queue, now=now)
    where = sa.and_(
        rows.not_running(store, now), *_conditions(store, now, states, name, queue)
    )
    stmt = store.statements.delete_batch(where, DELETE_BATCH)
    total = 0
    while True:
        with store.write() as conn:
            deleted = conn.execute(stmt).rowcount
        total += deleted
        if deleted < DELETE_BATCH:
            return total


def purge_dead(
    store: Store,
    *,
    older_than: float | None = None,
    name: str | None = None,
    now: datetime.datetime | None = None,
    dry_run: bool = False,
) -> int:
    """Delete dead tasks (of ``name``) whose last failure is more than
    ``older_than`` seconds ago (all dead tasks if ``None``); return how many,
    or with ``dry_run`` how many would be deleted."""
    before = _cutoff(store, older_than, now)
    if not dry_run:
        return store.delete_dead(before=before, name=name)
    where = store.statements.dead(before=before, name=name)
    with store.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(store.table).where(where)
            ).scalar_one()
        )


def prune_succeeded(store: Store, now: datetime.datetime | None = None) -> int:
    """Delete succeeded tasks whose ``keep_succeeded`` period ended; return how
    many."""
    return store.delete_expired(now or store.clock())


def _cutoff(
    store: Store, older_than: float | None, now: datetime.datetime | None
) -> datetime.datetime | None:
    if older_than is None:
        return None
    return (now or store.clock()) - datetime.timedelta(seconds=older_than)
