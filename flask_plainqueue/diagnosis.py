"""Answers for operators: which workers run, whether the queue is healthy,
and why a task is not running."""

from __future__ import annotations

import dataclasses
import datetime
import typing as t
from collections.abc import Sequence

import sqlalchemy as sa

from .admin import get_task
from .clock import as_utc
from .info import Health
from .info import Paused
from .info import Reason
from .info import WorkerInfo
from .roster import Roster
from .schema import STATUS_QUEUED
from .schema import TaskState

if t.TYPE_CHECKING:
    from .config import QueueConfig
    from .store import Store


def workers(
    store: Store, config: QueueConfig, now: datetime.datetime | None = None
) -> list[WorkerInfo]:
    """Every registered worker with its state and the tasks it holds."""
    now = now or store.clock()
    roster = Roster(store)
    rows = roster.rows()
    held = roster.holding(now) if rows else {}
    result = []
    for row in rows:
        age = max(0.0, (now - row.heartbeat).total_seconds())
        stored = dataclasses.asdict(row)
        stored["state"] = "lost" if age > config.worker_timeout else row.state
        result.append(
            WorkerInfo(**stored, heartbeat_age=age, running=tuple(held.get(row.id, ())))
        )
    return result


def health(
    store: Store,
    config: QueueConfig,
    *,
    max_age: float | None = None,
    queues: Sequence[str] | None = None,
    now: datetime.datetime | None = None,
) -> Health:
    """Whether a live worker serves each of ``queues`` (any queue if none is
    given) and no due task that is not paused has waited ``max_age`` seconds
    or more."""
    now = now or store.clock()
    live = [w for w in workers(store, config, now) if w.alive]
    problems = []
    served = {q: sum(1 for w in live if w.serves(q)) for q in queues or ()}
    if not live:
        problems.append("no live worker")
    else:
        problems.extend(
            f"no live worker serves queue {q!r}" for q, n in served.items() if not n
        )
    oldest_id, age = _oldest_due(store, Roster(store).paused(), queues, now)
    if max_age is not None and age is not None and age >= max_age:
        problems.append(
            f"task {oldest_id} has waited {age:.1f}s since it was due"
            f" (--max-age {max_age:g})"
        )
    return Health(
        ok=not problems,
        problems=tuple(problems),
        workers=len(live),
        queues=served,
        oldest_due_age=age,
        oldest_due_id=oldest_id,
    )


def _oldest_due(
    store: Store,
    paused: Paused,
    queues: Sequence[str] | None,
    now: datetime.datetime,
) -> tuple[int | None, float | None]:
    c = store.table.c
    stmt = (
        sa.select(c.id, c.run_at)
        .where(c.status == STATUS_QUEUED, c.run_at <= now)
        .order_by(c.run_at, c.id)
        .limit(1)
    )
    if queues:
        stmt = stmt.where(c.queue.in_(list(queues)))
    if paused.queues:
        stmt = stmt.where(c.queue.not_in(sorted(paused.queues)))
    if paused.tasks:
        stmt = stmt.where(c.name.not_in(sorted(paused.tasks)))
    with store.read() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None, None
    return int(row.id), max(0.0, (now - as_utc(row.run_at)).total_seconds())


def why(
    store: Store,
    config: QueueConfig,
    task_id: int,
    now: datetime.datetime | None = None,
) -> Reason:
    """Why task ``task_id`` is not running now (or that it is)."""
    now = now or store.clock()
    info = get_task(store, task_id, now)

    def reason(code: str, message: str, **details: t.Any) -> Reason:
        return Reason(task_id=task_id, code=code, message=message, details=details)

    if info is None:
        return reason(
            "not-found",
            f"No task {task_id}: it succeeded and was deleted, was deleted or"
            " pruned, or never existed.",
        )
    if info.state is TaskState.DEAD:
        return reason(
            "dead",
            f"It failed {info.failed_nr} time(s) and ran out of retries; it"
            " stays until retried or pruned. Last error: "
            f"{info.error_summary or '(none)'}",
            failed_nr=info.failed_nr,
            failed_last=info.failed_last,
        )
    if info.state is TaskState.SUCCEEDED:
        return reason(
            "succeeded",
            "It succeeded and is kept with its result until"
            f" {info.run_at.isoformat()}.",
            finished=info.finished,
        )
    every = workers(store, config, now)
    by_id = {w.id: w for w in every}
    if info.state is TaskState.RUNNING:
        owner = info.lease_owner or ""
        worker = by_id.get(owner)
        if worker is None or worker.state == "lost":
            return reason(
                "leased-by-lost-worker",
                f"Worker {owner} holds it but is lost (no heartbeat"
                f" for {config.worker_timeout:g}s or more); it runs again when a"
                f" live worker notices, or when the lease ends at"
                f" {info.run_at.isoformat()}.",
                owner=owner,
                lease_ends=info.run_at,
            )
        return reason(
            "running",
            f"Attempt {info.attempts} runs on worker {owner} ({worker.state});"
            f" its lease ends at {info.run_at.isoformat()} unless extended.",
            owner=owner,
            attempt=info.attempts,
            lease_ends=info.run_at,
        )
    if info.state is TaskState.SCHEDULED:
        if info.failed_nr:
            return reason(
                "backing-off",
                f"Attempt {info.attempts} failed"
                f" ({info.error_summary or 'no error recorded'}); the next is due"
                f" at {info.run_at.isoformat()}.",
                failed_nr=info.failed_nr,
                next_at=info.run_at,
            )
        return reason(
            "scheduled",
            f"It is due at {info.run_at.isoformat()}.",
            due=info.run_at,
        )
    paused = Roster(store).paused()
    if info.queue in paused.queues:
        return reason(
            "queue-paused",
            f"Its queue {info.queue!r} is paused; 'flask queue resume --queue"
            f" {info.queue}' resumes it.",
            queue=info.queue,
        )
    if info.name in paused.tasks:
        return reason(
            "task-paused",
            f"Task {info.name!r} is paused; 'flask queue resume --task"
            f" {info.name}' resumes it.",
            task=info.name,
        )
    serving = [w for w in every if w.alive and w.serves(info.queue)]
    if not serving:
        return reason(
            "no-worker",
            f"No live worker serves its queue {info.queue!r}. Start one with"
            f" 'flask queue work' (with --queue {info.queue} if you name queues).",
            queue=info.queue,
        )
    if not any(info.name in w.tasks for w in serving):
        return reason(
            "unknown-task",
            f"No live worker serving queue {info.queue!r} knows task"
            f" {info.name!r}: import its module in the workers (e.g. with"
            " PLAINQUEUE_TASKS) and restart them.",
            task=info.name,
        )
    ahead = _ahead(store, task_id, info.queue, now)
    if ahead:
        return reason(
            "waiting-behind",
            f"{ahead} due task(s) of higher priority or older wait before it on"
            f" queue {info.queue!r}.",
            ahead=ahead,
        )
    return reason(
        "pending",
        "It is due and first in line; a worker takes it at its next claim.",
    )


def _ahead(store: Store, task_id: int, queue: str, now: datetime.datetime) -> int:
    """How many due tasks of ``queue`` come before ``task_id`` in claim order."""
    c = store.table.c
    me = sa.select(c.claim_rank, c.run_at, c.id).where(c.id == task_id).subquery("me")
    earlier = sa.or_(
        c.claim_rank < me.c.claim_rank,
        sa.and_(c.claim_rank == me.c.claim_rank, c.run_at < me.c.run_at),
        sa.and_(
            c.claim_rank == me.c.claim_rank,
            c.run_at == me.c.run_at,
            c.id < me.c.id,
        ),
    )
    stmt = (
        sa.select(sa.func.count())
        .select_from(store.table.join(me, sa.true()))
        .where(
            c.status == STATUS_QUEUED,
            c.queue == queue,
            c.run_at <= now,
            earlier,
        )
    )
    with store.read() as conn:
        return int(conn.execute(stmt).scalar_one())
