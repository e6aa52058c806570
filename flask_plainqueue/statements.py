"""The queue's SQL, dialect-neutral: SQLAlchemy Core statement builders (the
values they read and write are in :mod:`.claims`).

Every statement is built here once, from the tables alone; the backends
(:mod:`.sqlite`, :mod:`.postgresql`) add what their dialect needs (how a
transaction begins, row locks, NOTIFY) and the store runs them.
"""

from __future__ import annotations

import datetime
import typing as t
from collections.abc import Callable
from collections.abc import Sequence

import sqlalchemy as sa

from .claims import Kept
from .claims import Outcomes
from .schema import STATUS_DEAD
from .schema import STATUS_QUEUED
from .schema import STATUS_SUCCEEDED
from .schema import Tables


class Statements:
    """The queue's statements for one set of tables, built once and cached."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.table = table = tables.tasks
        c = table.c
        #: Claim order: highest priority first, then due time, then id (the
        #: claim index's order: ``claim_rank`` is ``-priority``).
        self.order = (c.claim_rank, c.run_at, c.id)
        #: The same order among the tasks of one name, as the claim index
        #: (``ix_<table>_claim``) has it: see :meth:`named`.
        self.name_order = (c.name, *self.order)
        queued = c.status == sa.literal_column(f"'{STATUS_QUEUED}'")
        #: A task that may be claimed at ``:now``: queued, due and not leased
        #: (the claim indexes hold exactly the queued rows nobody leases).
        self.due = sa.and_(
            queued, c.lease_owner.is_(None), c.run_at <= sa.bindparam("now")
        )
        #: Leased tasks whose lease ended by ``:now``.
        self.lease_expired = sa.and_(
            queued, c.lease_owner.is_not(None), c.run_at <= sa.bindparam("now")
        )
        #: What a claim returns, as :class:`~.claims.ClaimedTask` takes it.
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
        #: Keep a succeeded task this worker still holds, with its result,
        #: until ``run_at`` (its expiry); pending progress is written with it.
        self.keep_owned = (
            sa.update(table)
            .where(owned)
            .values(
                status=STATUS_SUCCEEDED,
                result=sa.bindparam("b_result", type_=sa.Text),
                finished=sa.bindparam("b_finished", type_=c.finished.type),
                run_at=sa.bindparam("b_run_at", type_=c.run_at.type),
                progress=sa.func.coalesce(
                    sa.bindparam("b_progress", type_=sa.Text), c.progress
                ),
                lease_owner=None,
            )
        )
        #: Write the progress of a task this worker still holds.
        self.progress_owned = (
            sa.update(table)
            .where(owned)
            .values(progress=sa.bindparam("b_progress", type_=sa.Text))
        )
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

    def reclaim(self, *, skip_locked: bool = False) -> sa.Update:
        """Hand back the tasks whose lease ended by ``:now`` (their worker died
        or hung): due again at once, at the old lease end, so they come first
        in claim order. One seek in the lease index (``ix_<table>_lease``);
        the old lease holder's settles and extensions no longer match (they
        are fenced by owner). ``skip_locked``: leave rows another transaction
        is handing back (PostgreSQL; ``test_claim_scaling`` checks the plan)."""
        c = self.table.c
        expired = sa.select(c.id).where(self.lease_expired)
        if not skip_locked:
            return (
                sa.update(self.table)
                .where(c.id.in_(expired.scalar_subquery()))
                .values(lease_owner=None)
            )
        locked = expired.with_for_update(skip_locked=True).cte("expired")
        return sa.update(self.table).where(c.id == locked.c.id).values(lease_owner=None)

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

    def pick(
        self,
        name: sa.ColumnElement[str],
        limit: sa.ColumnElement[int],
        queues: int | None,
    ) -> sa.Select[tuple[int]]:
        """The ids of up to ``limit`` due tasks named ``name``, in claim order:
        the rows a batch claim takes (a range in the claim index)."""
        c = self.table.c
        return (
            sa.select(c.id)
            .where(self.due, self.named(name), *self.queue_filter(queues))
            .order_by(*self.name_order)
            # When nothing is due the name, and so the limit, is NULL, which
            # SQLite refuses and PostgreSQL takes as "no limit".
            .limit(sa.func.coalesce(limit, 0))
        )

    def named(self, name: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
        """Tasks named ``name``, for statements ordered by :attr:`name_order`.

        Spelled as a range (``name >= :n AND name <= :n``), not ``=``: after
        ``name = :n`` a planner drops ``name`` from the order, and then the
        overall due index (``ix_<table>_due``) filtered by name looks as good
        as the claim index to it whenever its statistics say one name has
        every row, although walking it passes every due task of the other
        names. As a range, only the claim index gives the order without a
        sort, so it is chosen on both databases whatever the statistics.
        """
        c = self.table.c
        return sa.and_(c.name >= name, c.name <= name)

    def first_of(
        self, name: sa.ColumnElement[str], queues: int | None
    ) -> sa.Select[t.Any]:
        """The first due task named ``name`` in claim order: one seek in the
        claim index. The backends run it once per task name a worker knows
        (a lateral join or a correlated subquery), which keeps the "which name
        is next" question independent of the backlog and of rows of names this
        worker does not know (after a rolling deploy, maybe all of them)."""
        c = self.table.c
        return (
            sa.select(c.name, c.claim_rank, c.run_at, c.id)
            .where(self.due, self.named(name), *self.queue_filter(queues))
            .order_by(*self.name_order)
            .limit(1)
        )

    def first_due(self) -> sa.Select[t.Any]:
        """The name and queue of the first due task of all, in claim order:
        one seek in the due index (``ix_<table>_due``)."""
        c = self.table.c
        # "id > 0": the due index's condition, which no other statement states
        # (see schema.py), so only this one can use it.
        return (
            sa.select(c.name, c.queue)
            .where(self.due, c.id > sa.literal_column("0"))
            .order_by(*self.order)
            .limit(1)
        )

    def first_overall(
        self,
        served: Callable[[sa.ColumnElement[str]], sa.ColumnElement[bool]],
        queues: int | None,
    ) -> sa.ScalarSelect[t.Any]:
        """The name of the first due task of all when ``served(name)`` holds
        and its queue is served, else NULL: one seek in the due index
        (``ix_<table>_due``). Usually this answers "which name is next"; when
        tasks of names or queues a worker does not serve come first, the
        backend asks :meth:`first_of` for each name it knows instead, so
        neither costs more as those tasks pile up."""
        overall = self.first_due().subquery("overall")
        queue_ok = (
            []
            if queues is None
            else [overall.c.queue.in_([sa.bindparam(f"q{i}") for i in range(queues)])]
        )
        return (
            sa.select(overall.c.name)
            .where(served(overall.c.name), *queue_ok)
            .scalar_subquery()
        )

    @staticmethod
    def queue_params(queues: Sequence[str] | None) -> dict[str, str]:
        return {f"q{i}": queue for i, queue in enumerate(queues or ())}

    # -- outcomes -------------------------------------------------------------

    def settle_params(
        self,
        owner: str,
        outcomes: Outcomes,
        now: datetime.datetime,
        *,
        completed: bool = True,
    ) -> list[tuple[sa.Executable, list[dict[str, t.Any]]]]:
        """The statements that write ``outcomes``, each with its parameter sets
        (with ``completed=False``, all but the deletes of completed tasks)."""
        writes: list[tuple[sa.Executable, list[dict[str, t.Any]]]] = []
        if outcomes.completed and completed:
            writes.append(
                (
                    self.delete_owned,
                    [
                        {"b_id": i, "b_attempts": a, "owner": owner}
                        for i, a in outcomes.completed
                    ],
                )
            )
        if outcomes.kept:
            writes.append(
                (self.keep_owned, [self.kept_params(owner, k) for k in outcomes.kept])
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

    @staticmethod
    def kept_params(owner: str, kept: Kept) -> dict[str, t.Any]:
        """The parameters of :attr:`keep_owned` for ``kept``."""
        return {
            "b_id": kept.id,
            "b_attempts": kept.attempts,
            "owner": owner,
            "b_result": kept.result,
            "b_finished": kept.finished,
            "b_run_at": kept.expires,
            "b_progress": kept.progress,
        }

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
        where = c.status == sa.literal_column(f"'{STATUS_DEAD}'")
        if before is not None:
            where = sa.and_(where, sa.func.coalesce(c.failed_last, c.created) < before)
        if name is not None:
            where = sa.and_(where, c.name == name)
        return where

    def expired(self, now: datetime.datetime) -> sa.ColumnElement[bool]:
        """Kept succeeded tasks whose keep period ended by ``now``: in the due
        index's ``status`` range, so no claim's index range holds them."""
        c = self.table.c
        return sa.and_(
            c.status == sa.literal_column(f"'{STATUS_SUCCEEDED}'"), c.run_at <= now
        )

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
