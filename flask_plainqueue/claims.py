"""What a claim hands a worker and what the worker hands back to be written:
a claimed task, the finished attempts not yet written (:class:`Outcomes`), what
a worker may claim (:class:`ClaimRequest`), and the row of a task about to be
stored. Plain values, with no SQL: :mod:`.statements` builds the statements
that read and write them."""

from __future__ import annotations

import dataclasses
import datetime
import typing as t
from collections.abc import Iterator
from collections.abc import Sequence

from .schema import STATUS_QUEUED


class ClaimedTask(t.NamedTuple):
    """A row a worker holds under a lease.

    A named tuple, not a frozen dataclass: a claim builds one per task, and a
    tuple is built from the row in one C call."""

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


@dataclasses.dataclass(frozen=True)
class Kept:
    """A succeeded attempt whose row is kept with its result until ``expires``."""

    id: int
    attempts: int
    #: The JSON text of the return value (``null`` if it was not JSON).
    result: str
    finished: datetime.datetime
    expires: datetime.datetime
    #: The last progress reported and not yet written, as JSON text.
    progress: str | None = None


@dataclasses.dataclass
class Outcomes:
    """Finished attempts not yet written; written in the next write transaction."""

    completed: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    failed: list[Failure] = dataclasses.field(default_factory=list)
    kept: list[Kept] = dataclasses.field(default_factory=list)
    #: When the batch of these attempts was claimed (``time.monotonic()``), if
    #: the worker noted it: outcomes older than a lease may find their rows
    #: taken by another worker.
    claimed_at: float | None = None

    def __bool__(self) -> bool:
        return bool(self.completed or self.failed or self.kept)

    def ids(self) -> list[int]:
        """The ids of the tasks whose attempts these are."""
        return [task_id for task_id, _ in self.each()]

    def clear(self) -> None:
        self.completed.clear()
        self.failed.clear()
        self.kept.clear()
        self.claimed_at = None

    def each(self) -> Iterator[tuple[int, Outcomes]]:
        """Each outcome on its own, with its task's id."""
        for done in self.completed:
            yield done[0], Outcomes(completed=[done])
        for failure in self.failed:
            yield failure.id, Outcomes(failed=[failure])
        for kept in self.kept:
            yield kept.id, Outcomes(kept=[kept])


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
    #: Hand back expired leases first (:meth:`Statements.reclaim`); workers
    #: ask for it once per poll interval, not on every claim.
    sweep: bool = True


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
    tasks = []
    for row in rows:
        task_id, name, data, attempts, failed_nr, priority = row
        if (
            type(task_id) is int
            and type(name) is str
            and (data is None or type(data) is str)
            and type(attempts) is int
            and type(failed_nr) is int
            and type(priority) is int
        ):
            tasks.append(ClaimedTask._make(row))
        else:
            tasks.append(
                ClaimedTask(
                    int(task_id),
                    str(name),
                    None if data is None else str(data),
                    whole_or_zero(attempts),
                    whole_or_zero(failed_nr),
                    whole_or_zero(priority),
                )
            )
    if len(tasks) > 1:
        tasks.sort(key=_claim_order)
    return tasks


def _claim_order(task: ClaimedTask) -> tuple[int, int]:
    return -task.priority, task.id


def whole_or_zero(value: object) -> int:
    """``value`` if it is a whole number (as SQLite may hand back anything)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
