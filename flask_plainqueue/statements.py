"""The queue's SQL, dialect-neutral: SQLAlchemy Core statement builders and
the shapes of the rows they read and write.

Every statement is built here once, from the tables alone; the backends
(:mod:`.sqlite`, :mod:`.postgresql`) add what their dialect needs (how a
transaction begins, row locks, NOTIFY) and the store runs them.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing as t
from collections.abc import Sequence

import sqlalchemy as sa

from .schema import STATUS_DEAD
from .schema import STATUS_QUEUED
from .schema import Tables


@dataclasses.dataclass(frozen=True)
class ClaimedTask:
    """A row a worker holds under a lease."""

    id: int
    name: str
    data: str | None
    attempts: int
    failed_nr: int
    priority: int


@dataclasses.dataclass(frozen=True)
class Failure:
    """The outcome of a failed attempt, to be written by the store's settle."""

    id: int
    attempts: int
    error: str
    run_at: datetime.datetime
    dead: bool
    #: ``False`` for :class:`~flask_plainqueue.Retry`: rescheduled, not a failure.
    counts: bool = True


@dataclasses.dataclass
class Outcomes:
    """Finished attempts not yet written; written in the next write transaction."""

    completed: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    failed: list[Failure] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.completed or self.failed)

    def clear(self) -> None:
        self.completed.clear()
        self.failed.clear()


@dataclasses.dataclass(frozen=True)
class ClaimRequest:
    """What a worker may claim: tasks of these names (with their batch sizes)
    on these queues, leased to ``owner`` until ``until``."""

    owner: str
    names: Sequence[str]
    batch_sizes: t.Mapping[str, int]
    now: datetime.datetime
    until: datetime.datetime
    #: ``None``: every queue.
    queues: Sequence[str] | None = None


def new_row(
    name: str,
    *,
    queue: str,
    priority: int,
    data: str,
    now: datetime.datetime,
    run_at: datetime.datetime,
    unique_key: str | None = None,
) -> dict[str, t.Any]:
    """The column values of a task about to be inserted."""
    return {
        "name": name,
        "queue": queue,
        "priority": priority,
        "data": data,
        "created": now,
        "run_at": run_at,
        "status": STATUS_QUEUED,
        "attempts": 0,
        "failed_nr": 0,
        "unique_key": unique_key,
    }


def claimed(rows: Sequence[t.Any]) -> list[ClaimedTask]:
    """Claimed rows (``id, name, data, attempts, failed_nr, priority``) in the
    order a batch runs: ``RETURNING`` gives no order.

    A hand-written row may hold anything in a column SQLite does not type
    (text in ``priority``, a number in ``data``): such a value is read as 0 (or
    as text), so one bad row can neither break a claim nor the rows beside it.
    """
    tasks = [
        ClaimedTask(
            int(task_id),
            str(name),
            None if data is None else str(data),
            whole_or_zero(attempts),
            whole_or_zero(failed_nr),
            whole_or_zero(priority),
        )
        for task_id, name, data, attempts, failed_nr, priority in rows
    ]
    tasks.sort(key=lambda task: (-task.priority, task.id))
    return tasks


def whole_or_zero(value: object) -> int:
    """``value`` if it is a whole number (as SQLite may hand back anything)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Statements:
    """The queue's statements for one set of tables, built once and cached."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.table = table = tables.tasks
        c = table.c
        #: Claim order: priority, then due time, then id.
        self.order = (c.priority.desc(), c.run_at, c.id)
        #: A task that may be claimed at ``:now``.
        self.due = sa.and_(c.status == STATUS_QUEUED, c.run_at <= sa.bindparam("now"))
        #: What a claim returns, as :class:`ClaimedTask` takes it.
        self.claim_returning = (
            c.id,
            c.name,
            c.data,
            c.attempts,
            c.failed_nr,
            c.priority,
        )
        #: What a claim writes: the lease.
        self.claim_values = {
            "lease_owner": sa.bindparam("owner"),
            "run_at": sa.bindparam("until"),
            "attempts": c.attempts + 1,
        }
        self._cache: dict[t.Hashable, t.Any] = {}
        owned = sa.and_(
            c.id == sa.bindparam("b_id"),
            c.lease_owner == sa.bindparam("owner"),
            c.attempts == sa.bindparam("b_attempts"),
        )
        #: Delete a task this worker still holds (fenced by owner and attempt).
        self.delete_owned = sa.delete(table).where(owned)
        #: Record a failed attempt of a task this worker still holds.
        self.fail = (
            sa.update(table)
            .where(owned)
            .values(
                failed_nr=c.failed_nr + sa.bindparam("b_inc"),
                failed_last=sa.bindparam("b_now"),
                failed_error=sa.bindparam("b_error"),
                run_at=sa.bindparam("b_run_at"),
                status=sa.bindparam("b_status"),
                lease_owner=None,
            )
        )
        held = sa.and_(
            c.lease_owner == sa.bindparam("owner"),
            c.id.in_(sa.bindparam("ids", expanding=True)),
        )
        #: Hand back tasks this worker holds: due at ``:now``, for anyone.
        self.release = (
            sa.update(table)
            .where(held)
            .values(lease_owner=None, run_at=sa.bindparam("now"))
        )
        #: Move the lease of tasks this worker holds to ``:until``.
        self.extend = sa.update(table).where(held).values(run_at=sa.bindparam("until"))
        #: Claim one queued task by id, due or not (eager mode).
        self.claim_id = self.claim_where(
            sa.and_(c.id == sa.bindparam("p_id"), c.status == STATUS_QUEUED)
        )

    # -- claims ---------------------------------------------------------------

    def claim_where(self, where: sa.ColumnElement[bool]) -> sa.Update:
        """Take the lease of the rows matching ``where``."""
        return (
            sa.update(self.table)
            .where(where)
            .values(**self.claim_values)
            .returning(*self.claim_returning)
        )

    def queue_filter(self, queues: int | None) -> list[sa.ColumnElement[bool]]:
        """``queue IN (:q0, :q1, ...)`` for ``queues`` queues (none for all)."""
        if queues is None:
            return []
        params: list[sa.BindParameter[str]] = [
            sa.bindparam(f"q{i}") for i in range(queues)
        ]
        return [self.table.c.queue.in_(params)]

    def pick(self, queues: int | None) -> sa.Select[tuple[int]]:
        """The ids of up to ``:limit`` due tasks named ``:p_name``, in claim
        order: the rows a batch claim takes."""
        key = ("pick", queues)
        stmt = self._cache.get(key)
        if stmt is None:
            c = self.table.c
            stmt = self._cache[key] = (
                sa.select(c.id)
                .where(
                    self.due,
                    c.name == sa.bindparam("p_name"),
                    *self.queue_filter(queues),
                )
                .order_by(*self.order)
                .limit(sa.bindparam("limit"))
            )
        return t.cast("sa.Select[tuple[int]]", stmt)

    def head(self, names: int, queues: int | None) -> sa.CompoundSelect[t.Any]:
        """For each of ``names`` task names (``:n0``, ``:n1``, ...), its first due
        task in claim order (``name, priority, run_at, id``): one index seek per
        name. Scanning the claim order across all names instead would walk past
        every due row of names this worker does not know, which after a rolling
        deploy can be all of them."""
        key = ("head", names, queues)
        stmt = self._cache.get(key)
        if stmt is None:
            c = self.table.c
            parts = [
                sa.select(c.name, c.priority, c.run_at, c.id)
                .where(
                    self.due,
                    c.name == sa.bindparam(f"n{i}"),
                    *self.queue_filter(queues),
                )
                .order_by(*self.order)
                .limit(1)
                .subquery()
                .select()
                for i in range(names)
            ]
            stmt = self._cache[key] = sa.union_all(*parts)
        return t.cast("sa.CompoundSelect[t.Any]", stmt)

    @staticmethod
    def first_head(heads: Sequence[t.Any]) -> str:
        """The name of the head row first in claim order."""
        return t.cast(str, min(heads, key=lambda r: (-r[1], r[2], r[3]))[0])

    @staticmethod
    def name_params(names: Sequence[str]) -> dict[str, str]:
        return {f"n{i}": name for i, name in enumerate(names)}

    @staticmethod
    def queue_params(queues: Sequence[str] | None) -> dict[str, str]:
        return {f"q{i}": queue for i, queue in enumerate(queues or ())}

    # -- outcomes -------------------------------------------------------------

    def settle_params(
        self, owner: str, outcomes: Outcomes, now: datetime.datetime
    ) -> list[tuple[sa.Executable, list[dict[str, t.Any]]]]:
        """The statements that write ``outcomes``, each with its parameter sets."""
        writes: list[tuple[sa.Executable, list[dict[str, t.Any]]]] = []
        if outcomes.completed:
            writes.append(
                (
                    self.delete_owned,
                    [
                        {"b_id": i, "b_attempts": a, "owner": owner}
                        for i, a in outcomes.completed
                    ],
                )
            )
        if outcomes.failed:
            writes.append(
                (
                    self.fail,
                    [
                        {
                            "b_id": f.id,
                            "b_attempts": f.attempts,
                            "owner": owner,
                            "b_inc": 1 if f.counts else 0,
                            "b_now": now,
                            "b_error": f.error,
                            "b_run_at": f.run_at,
                            "b_status": STATUS_DEAD if f.dead else STATUS_QUEUED,
                        }
                        for f in outcomes.failed
                    ],
                )
            )
        return writes

    # -- enqueue --------------------------------------------------------------

    def insert(self, columns: Sequence[sa.ColumnElement[t.Any]] = ()) -> sa.Insert:
        """Insert tasks, returning their ids (and ``columns``) in parameter order."""
        return sa.insert(self.table).returning(
            self.table.c.id, *columns, sort_by_parameter_order=True
        )

    def unique_existing(self, row: t.Mapping[str, t.Any]) -> sa.Select[t.Any]:
        """The queued task with ``row``'s name and unique key."""
        c = self.table.c
        return sa.select(c.id).where(
            c.name == row["name"], c.unique_key == row["unique_key"], self.unique_where
        )

    @property
    def unique_where(self) -> sa.ColumnElement[bool]:
        """The unique-key index's condition."""
        c = self.table.c
        return sa.and_(c.unique_key.is_not(None), c.status == STATUS_QUEUED)

    # -- housekeeping ---------------------------------------------------------

    def unknown_names(self, known: Sequence[str], limit: int) -> sa.Select[t.Any]:
        """Names of due tasks that none of ``known`` is."""
        c = self.table.c
        return (
            sa.select(c.name)
            .where(self.due, c.name.not_in(list(known)))
            .group_by(c.name)
            .limit(limit)
        )

    def dead(
        self, *, before: datetime.datetime | None, name: str | None
    ) -> sa.ColumnElement[bool]:
        """Dead tasks (of task ``name``) whose last failure is before ``before``."""
        c = self.table.c
        where = c.status == STATUS_DEAD
        if before is not None:
            where = sa.and_(where, sa.func.coalesce(c.failed_last, c.created) < before)
        if name is not None:
            where = sa.and_(where, c.name == name)
        return where

    def delete_batch(self, where: sa.ColumnElement[bool], batch: int) -> sa.Delete:
        """Delete up to ``batch`` of the rows matching ``where``, so a large
        delete never holds the write lock for long."""
        c = self.table.c
        ids = sa.select(c.id).where(where).limit(batch).scalar_subquery()
        return sa.delete(self.table).where(c.id.in_(ids))

    # -- periodic ticks -------------------------------------------------------

    def move_tick(self, name: str, tick: datetime.datetime) -> sa.Update:
        """Move ``name``'s last tick forward to ``tick``: only one transaction
        can win (on PostgreSQL a concurrent one waits for the row lock, then sees
        the new value and matches nothing)."""
        p = self.tables.periodic.c
        return (
            sa.update(self.tables.periodic)
            .where(p.name == name, p.last_tick < tick)
            .values(last_tick=tick)
        )
