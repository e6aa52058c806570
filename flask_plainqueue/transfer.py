"""``flask queue export`` and ``flask queue import``: move stored tasks from one
database to another (e.g. from SQLite to PostgreSQL) as JSON Lines.

One line per task, an object with the task's columns: ``name``, ``queue``,
``priority``, ``data`` (the decoded JSON value), ``created``, ``run_at``
(ISO 8601, UTC), ``status``, ``attempts``, ``failed_nr``, ``failed_last``,
``failed_error`` and ``unique_key``. Ids are not kept: the importing database
assigns new ones. Lease owners are not kept either: a task exported while a
worker held it is exported as due at once.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import typing as t
from collections.abc import Iterable
from collections.abc import Iterator

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from .exceptions import PlainQueueError
from .models import STATUS_DEAD
from .models import STATUS_QUEUED

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .extension import PlainQueue
    from .storage import Storage

UTC = datetime.timezone.utc

#: Rows inserted per statement on import.
IMPORT_CHUNK = 1000

_FIELDS = (
    "name",
    "queue",
    "priority",
    "data",
    "created",
    "run_at",
    "status",
    "attempts",
    "failed_nr",
    "failed_last",
    "failed_error",
    "unique_key",
)


class TransferError(PlainQueueError):
    """An export file that cannot be imported; the message names the line."""


@dataclasses.dataclass
class ExportResult:
    """What :func:`export_tasks` wrote."""

    #: Tasks written.
    count: int = 0
    #: Of those, dead tasks.
    dead: int = 0
    #: Of those, tasks a worker held when exported (written as due now).
    running: int = 0
    #: Of those, tasks whose stored data is not valid JSON (written as
    #: ``data_text``).
    undecodable: int = 0


@dataclasses.dataclass
class ImportResult:
    """What :func:`import_tasks` stored."""

    #: Tasks inserted.
    count: int = 0
    #: Tasks not inserted because a waiting task of the same name already has
    #: their ``unique_key``.
    duplicates: int = 0
    #: Task names no task definition of this app has (imported anyway).
    unknown_names: set[str] = dataclasses.field(default_factory=set)


def export_tasks(
    storage: Storage,
    out: t.TextIO,
    *,
    include_dead: bool = False,
    now: datetime.datetime | None = None,
) -> ExportResult:
    """Write the queue's waiting tasks (due, scheduled and running; with
    ``include_dead`` dead ones too) to ``out``, one JSON object per line, in id
    order. Reads in chunks, so the table may be large."""
    now = now or datetime.datetime.now(UTC)
    c = storage.table.c
    stmt = sa.select(
        *(c[name] for name in _FIELDS if name != "data"), c.data, c.lease_owner
    )
    if not include_dead:
        stmt = stmt.where(c.status == STATUS_QUEUED)
    stmt = stmt.order_by(c.id)
    result = ExportResult()
    with storage.engine.connect() as conn:
        rows = conn.execution_options(yield_per=1000).execute(stmt)
        for row in rows:
            record = _record(row, now, result)
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
            out.write("\n")
    return result


def _record(
    row: t.Any, now: datetime.datetime, result: ExportResult
) -> dict[str, t.Any]:
    m = row._mapping
    record: dict[str, t.Any] = {}
    for name in _FIELDS:
        value = m[name]
        if isinstance(value, datetime.datetime):
            value = value.astimezone(UTC).isoformat()
        record[name] = value
    text = m["data"]
    if text is None:
        record["data"] = None
    else:
        try:
            record["data"] = json.loads(text)
        except ValueError:
            del record["data"]
            record["data_text"] = text
            result.undecodable += 1
    result.count += 1
    if m["status"] == STATUS_DEAD:
        result.dead += 1
    elif m["lease_owner"] is not None and m["run_at"] > now:
        # run_at is the lease's expiry here, not when the task was due.
        record["run_at"] = now.isoformat()
        result.running += 1
    return record


def import_tasks(
    storage: Storage,
    session: Session,
    lines: Iterable[str],
    *,
    known_names: t.Collection[str] = (),
) -> ImportResult:
    """Insert the tasks of an export through ``session`` in one transaction, and
    commit it: all of them, or (on an error) none.

    Every line is checked before anything is written. A waiting task whose
    ``unique_key`` is already taken by a waiting task of the same name is
    skipped, as ``perform(..., unique_key=...)`` would.

    :raises TransferError: a line is not a valid task; the message names it.
    """
    rows = list(_parse(lines, postgresql=storage.dialect == "postgresql"))
    result = ImportResult()
    result.unknown_names = {r["name"] for r in rows} - set(known_names)
    if session.in_transaction():
        session.commit()
    storage.begin_session_write(session)
    try:
        # In file order, so ids keep the export's order (claims break ties by id).
        chunk: list[dict[str, t.Any]] = []
        for row in rows:
            if row["unique_key"] is None or row["status"] != STATUS_QUEUED:
                chunk.append(row)
                if len(chunk) < IMPORT_CHUNK:
                    continue
            if chunk:
                result.count += len(storage.insert(session, chunk))
                chunk = []
            if row["unique_key"] is not None and row["status"] == STATUS_QUEUED:
                _, new = storage.insert_unique(session, row)
                if new:
                    result.count += 1
                else:
                    result.duplicates += 1
        if chunk:
            result.count += len(storage.insert(session, chunk))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return result


def _parse(lines: Iterable[str], *, postgresql: bool) -> Iterator[dict[str, t.Any]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield _row(json.loads(line), postgresql)
        except (ValueError, TypeError, KeyError) as exc:
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise TransferError(
                f"Line {number} is not a task exported by 'flask queue export':"
                f" {detail}. Fix or remove the line; nothing was imported."
            ) from exc


def _row(record: t.Any, postgresql: bool) -> dict[str, t.Any]:
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    name = _text(record, "name")
    if "data_text" in record:
        data = record["data_text"]
        if not isinstance(data, str):
            raise ValueError("data_text must be a string")
        if postgresql:
            raise ValueError(
                "its data is not valid JSON, which PostgreSQL's jsonb cannot store"
            )
    else:
        data = json.dumps(record["data"], allow_nan=False, separators=(",", ":"))
    status = record.get("status", STATUS_QUEUED)
    if status not in (STATUS_QUEUED, STATUS_DEAD):
        raise ValueError(f"status must be {STATUS_QUEUED!r} or {STATUS_DEAD!r}")
    created = _time(record, "created")
    unique_key = record.get("unique_key")
    if unique_key is not None and not isinstance(unique_key, str):
        raise ValueError("unique_key must be a string or null")
    failed_error = record.get("failed_error")
    if failed_error is not None and not isinstance(failed_error, str):
        raise ValueError("failed_error must be a string or null")
    return {
        "name": name,
        "queue": _text(record, "queue", "default"),
        "priority": _int(record, "priority", minimum=None),
        "data": data,
        "created": created,
        "run_at": _time(record, "run_at", created),
        "status": status,
        "attempts": _int(record, "attempts"),
        "failed_nr": _int(record, "failed_nr"),
        "failed_last": _time(record, "failed_last", None),
        "failed_error": failed_error,
        "unique_key": unique_key,
    }


_MISSING: t.Any = object()


def _text(record: dict[str, t.Any], key: str, default: t.Any = _MISSING) -> str:
    value = record[key] if default is _MISSING else record.get(key, default)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string")
    return value


def _int(record: dict[str, t.Any], key: str, *, minimum: int | None = 0) -> int:
    value = record.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be a whole number")
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be {minimum} or more")
    return value


def _time(record: dict[str, t.Any], key: str, default: t.Any = _MISSING) -> t.Any:
    value = record[key] if default is _MISSING else record.get(key)
    if value is None:
        if default is _MISSING:
            raise ValueError(f"{key} must be a timestamp")
        return default
    if not isinstance(value, str):
        raise ValueError(f"{key} must be an ISO 8601 timestamp")
    parsed = datetime.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"{key} has no timezone (expected e.g. '+00:00')")
    return parsed.astimezone(UTC)


def add_commands(group: AppGroup, queue: PlainQueue) -> None:
    """Add ``export`` and ``import`` to the ``flask queue`` group."""

    @group.command("export", short_help="Write waiting tasks as JSON Lines.")
    @click.argument("output", type=click.File("w", encoding="utf-8"), default="-")
    @click.option(
        "--include-dead",
        is_flag=True,
        help="Export dead tasks too (kept for inspection).",
    )
    def export_command(output: t.TextIO, include_dead: bool) -> None:
        """Write the queue's waiting tasks (due, scheduled, running) to OUTPUT
        (default: standard output), one JSON object per line, for ``flask queue
        import`` in another app or database.

        Stop the workers first: a task a worker holds is exported as due now,
        and would run again if the worker finished it after all.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        storage = queue._state(app).storage
        result = export_tasks(storage, output, include_dead=include_dead)
        output.flush()
        name = getattr(output, "name", "-")
        where = "standard output" if name in ("-", "<stdout>") else name
        click.echo(
            f"Exported {result.count} task{'s' if result.count != 1 else ''}"
            f" ({result.dead} dead) to {where}.",
            err=True,
        )
        if result.running:
            click.echo(
                f"Warning: {result.running} task(s) were held by a running worker and"
                " were exported as due now; stop the workers before exporting so no"
                " task runs in both places.",
                err=True,
            )
        if result.undecodable:
            click.echo(
                f"Warning: {result.undecodable} task(s) have data that is not valid"
                " JSON; exported as 'data_text'.",
                err=True,
            )

    @group.command("import", short_help="Store tasks from a 'flask queue export' file.")
    @click.argument("source", type=click.File("r", encoding="utf-8"), default="-")
    def import_command(source: t.TextIO) -> None:
        """Store the tasks in SOURCE (a file written by ``flask queue export``, or
        ``-`` for standard input) in this app's queue, in one transaction: all of
        them or, on an error, none. New ids are assigned."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        storage = queue._state(app).storage
        db = queue.db
        assert db is not None
        try:
            result = import_tasks(
                storage, db.session(), source, known_names=queue.registry.names()
            )
        except TransferError as exc:
            raise click.ClickException(str(exc)) from exc
        message = f"Imported {result.count} task{'s' if result.count != 1 else ''}"
        if result.duplicates:
            message += (
                f"; skipped {result.duplicates} whose unique_key a waiting task"
                " already has"
            )
        click.echo(message + ".")
        for name in sorted(result.unknown_names):
            click.echo(
                f"Warning: no task definition named {name!r} is registered in this"
                " app; its tasks were imported and wait for a worker that knows it.",
                err=True,
            )
