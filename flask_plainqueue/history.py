"""The stats table: finished attempts per task name and minute, added to by
every worker's flush (an upsert that adds, so two workers' counts for one
minute end up in one row), read by ``queue.stats()``, pruned by the
housekeeping."""

from __future__ import annotations

import datetime
import typing as t
from collections.abc import Sequence

import sqlalchemy as sa

from .clock import as_utc

if t.TYPE_CHECKING:
    from .store import Store

#: The counted columns, added on conflict.
COUNTED = ("succeeded", "failed", "dead", "run_seconds")
#: Minutes deleted per transaction when pruning (each with a row per name).
PRUNE_BATCH = 500


class MinuteRow(t.NamedTuple):
    """One row of the stats table."""

    minute: datetime.datetime
    name: str
    succeeded: int
    failed: int
    dead: int
    run_seconds: float


def add(store: Store, rows: Sequence[MinuteRow]) -> None:
    """Add ``rows``' counts to the stored ones, in one write transaction."""
    if not rows:
        return
    table = store.tables.stats
    stmt = store.backend.upsert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.minute, table.c.name],
        set_={key: table.c[key] + getattr(stmt.excluded, key) for key in COUNTED},
    )
    with store.write() as conn:
        conn.execute(stmt, [row._asdict() for row in rows])


def read(
    store: Store, since: datetime.datetime, name: str | None = None
) -> list[MinuteRow]:
    """The rows from the minute ``since`` falls in onwards (of task ``name``),
    by minute, then name."""
    table = store.tables.stats
    start = since.replace(second=0, microsecond=0)
    query = sa.select(*table.c).where(table.c.minute >= start)
    if name is not None:
        query = query.where(table.c.name == name)
    query = query.order_by(table.c.minute, table.c.name)
    with store.read() as conn:
        return [
            MinuteRow(
                as_utc(row.minute),
                row.name,
                int(row.succeeded),
                int(row.failed),
                int(row.dead),
                float(row.run_seconds),
            )
            for row in conn.execute(query)
        ]


def prune(
    store: Store,
    before: datetime.datetime,
    *,
    batch: int = PRUNE_BATCH,
    max_batches: int | None = None,
) -> int:
    """Delete the rows of minutes that began before ``before``, ``batch``
    minutes per transaction; return how many rows."""
    table = store.tables.stats
    stmt = sa.delete(table).where(
        table.c.minute.in_(
            sa.select(table.c.minute)
            .where(table.c.minute < before)
            .order_by(table.c.minute)
            .limit(batch)
        )
    )
    total = 0
    rounds = 0
    while max_batches is None or rounds < max_batches:
        rounds += 1
        with store.write() as conn:
            deleted = int(conn.execute(stmt).rowcount)
        total += deleted
        # The subquery picks up to ``batch`` rows and each goes with its
        # minute: fewer deleted means none is left.
        if deleted < batch:
            break
    return total
