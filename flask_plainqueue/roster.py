"""The running workers and the pauses, as stored: each worker's row and
heartbeat, finding the workers that stopped beating and freeing their leases,
and the paused queues and task names.

Like :mod:`.store` it never touches ``current_app``; it runs on the
:class:`~.store.Store`'s engine and clock.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import typing as t
from collections.abc import Collection
from collections.abc import Sequence

import sqlalchemy as sa

from .clock import as_utc

# Re-exported: presence and worker import it from here.
from .info import Paused as Paused
from .info import WorkerRecord
from .schema import STATUS_QUEUED

if t.TYPE_CHECKING:
    from .store import Store

#: A worker's row as stored.
WorkerRow = WorkerRecord


class Roster:
    """The workers and pauses tables of one :class:`~.store.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.workers = store.tables.workers
        self.pauses = store.tables.pauses

    # -- a worker's own row -----------------------------------------------------

    def register(self, row: WorkerRow) -> None:
        """Insert ``row``, or replace the row of the same id."""
        values = _values(row)
        w = self.workers
        with self.store.write() as conn:
            conn.execute(sa.delete(w).where(w.c.id == row.id))
            conn.execute(sa.insert(w).values(values))

    def beat(
        self, row: WorkerRow, now: datetime.datetime, state: str
    ) -> datetime.datetime:
        """Record a heartbeat of ``row``'s worker at ``now`` in ``state``; its row
        is inserted again if a lost-worker prune deleted it. Returns ``now``."""
        w = self.workers
        with self.store.write() as conn:
            updated = conn.execute(
                sa.update(w).where(w.c.id == row.id).values(heartbeat=now, state=state)
            ).rowcount
            if not updated:
                values = _values(row)
                values.update(heartbeat=now, state=state)
                conn.execute(sa.insert(w).values(values))
        return now

    def unregister(self, worker_id: str) -> None:
        """Delete the row of worker ``worker_id`` (a clean exit)."""
        w = self.workers
        with self.store.write() as conn:
            conn.execute(sa.delete(w).where(w.c.id == worker_id))

    # -- every worker -------------------------------------------------------------

    def rows(self) -> list[WorkerRow]:
        """Every registered worker, oldest first."""
        w = self.workers
        with self.store.read() as conn:
            result = conn.execute(sa.select(w).order_by(w.c.started, w.c.id))
            return [_row(r) for r in result.mappings()]

    def lost(
        self, before: datetime.datetime, exclude: Collection[str] = ()
    ) -> list[str]:
        """Ids of the workers whose last heartbeat is before ``before``."""
        w = self.workers
        stmt = sa.select(w.c.id).where(w.c.heartbeat < before)
        if exclude:
            stmt = stmt.where(w.c.id.not_in(list(exclude)))
        with self.store.read() as conn:
            return list(conn.execute(stmt).scalars())

    def free_leases(self, owners: Sequence[str], now: datetime.datetime) -> int:
        """Make the rows that workers ``owners`` hold due at ``now``, for anyone.

        Their ``lease_owner`` is cleared, so if such a worker was only paused its
        writes find no row of its own (the fencing every settle and lease
        extension does) and the task runs again elsewhere."""
        if not owners:
            return 0
        c = self.store.table.c
        stmt = (
            sa.update(self.store.table)
            .where(
                c.status == STATUS_QUEUED,
                c.lease_owner.in_(list(owners)),
                c.run_at > now,
            )
            .values(lease_owner=None, run_at=now)
        )
        with self.store.write() as conn:
            freed: int = conn.execute(stmt).rowcount
            if freed:
                self.store.notify(conn)
        return freed

    def prune(self, before: datetime.datetime) -> int:
        """Delete the rows of workers lost since before ``before``."""
        w = self.workers
        with self.store.write() as conn:
            pruned: int = conn.execute(
                sa.delete(w).where(w.c.heartbeat < before)
            ).rowcount
            return pruned

    def holding(self, now: datetime.datetime) -> dict[str, list[int]]:
        """The ids of the tasks each worker holds under an unexpired lease."""
        c = self.store.table.c
        stmt = (
            sa.select(c.lease_owner, c.id)
            .where(
                c.status == STATUS_QUEUED,
                c.lease_owner.is_not(None),
                c.run_at > now,
            )
            .order_by(c.id)
        )
        held: dict[str, list[int]] = {}
        with self.store.read() as conn:
            for owner, task_id in conn.execute(stmt):
                held.setdefault(owner, []).append(task_id)
        return held

    # -- pauses ---------------------------------------------------------------------

    def paused(self) -> Paused:
        """The paused queues and task names."""
        p = self.pauses
        with self.store.read() as conn:
            rows = conn.execute(sa.select(p.c.kind, p.c.name)).all()
        return Paused(
            queues=frozenset(n for k, n in rows if k == "queue"),
            tasks=frozenset(n for k, n in rows if k == "task"),
        )

    def pause(self, kind: str, name: str, now: datetime.datetime) -> bool:
        """Pause queue or task ``name``; return whether it was running."""
        p = self.pauses
        with self.store.write() as conn:
            created = conn.execute(
                self.store.backend.upsert(p)
                .values(kind=kind, name=name, paused_at=now)
                .on_conflict_do_nothing(index_elements=[p.c.kind, p.c.name])
                .returning(p.c.name)
            ).first()
            if created is not None:
                # Idle workers re-read the pauses when woken.
                self.store.notify(conn)
            return created is not None

    def resume(self, kind: str, name: str) -> bool:
        """Resume queue or task ``name``; return whether it was paused."""
        p = self.pauses
        with self.store.write() as conn:
            deleted = conn.execute(
                sa.delete(p).where(p.c.kind == kind, p.c.name == name)
            ).rowcount
            if deleted:
                self.store.notify(conn)
            return bool(deleted)


def _values(row: WorkerRow) -> dict[str, t.Any]:
    values = dataclasses.asdict(row)
    values["queues"] = None if row.queues is None else json.dumps(list(row.queues))
    values["tasks"] = json.dumps(list(row.tasks))
    return values


def _row(r: sa.RowMapping) -> WorkerRow:
    queues = r["queues"]
    return WorkerRow(
        id=r["id"],
        host=r["host"],
        pid=r["pid"],
        kind=r["kind"],
        queues=None if queues is None else tuple(json.loads(queues)),
        tasks=tuple(json.loads(r["tasks"])),
        concurrency=r["concurrency"],
        version=r["version"],
        state=r["state"],
        started=as_utc(r["started"]),
        heartbeat=as_utc(r["heartbeat"]),
    )
