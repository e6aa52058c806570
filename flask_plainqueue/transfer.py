"""Moving stored tasks from one database to another (e.g. from SQLite to
PostgreSQL) as JSON Lines: the library half of ``flask queue export`` and
``flask queue import``.

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

import sqlalchemy as sa

from . import validate
from .clock import as_utc
from .clock import UTC
from .enqueue import encode
from .enqueue import MAX_DEPTH
from .exceptions import TransferError
from .schema import STATUS_DEAD
from .schema import STATUS_QUEUED
from .task_options import MAX_NAME_LENGTH
from .task_options import MAX_QUEUE_LENGTH

if t.TYPE_CHECKING:
    from .store import Store

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
    store: Store,
    out: t.TextIO,
    *,
    include_dead: bool = False,
    now: datetime.datetime | None = None,
) -> ExportResult:
    """Write the queue's waiting tasks (due, scheduled and running; with
    ``include_dead`` dead ones too) to ``out``, one JSON object per line, in id
    order. Reads in chunks, so the table may be large."""
    now = now or store.clock()
    c = store.table.c
    stmt = sa.select(
        *(c[name] for name in _FIELDS if name != "data"), c.data, c.lease_owner
    )
    # Kept succeeded tasks are finished work: never exported.
    stmt = stmt.where(
        c.status.in_((STATUS_QUEUED, STATUS_DEAD))
        if include_dead
        else c.status == STATUS_QUEUED
    )
    stmt = stmt.order_by(c.id)
    result = ExportResult()
    with store.read() as conn:
        rows = conn.execution_options(yield_per=1000).execute(stmt)
        for row in rows:
            record = _record(row, now, result)
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
            if not validate.is_utf8(line):
                # A hand-written row's lone surrogate: escaped, the line is
                # still valid UTF-8 (and imports as what is stored).
                line = json.dumps(record, separators=(",", ":"))
            out.write(line + "\n")
    return result


def _record(
    row: t.Any, now: datetime.datetime, result: ExportResult
) -> dict[str, t.Any]:
    m = row._mapping
    record: dict[str, t.Any] = {}
    for name in _FIELDS:
        value = m[name]
        if isinstance(value, datetime.datetime):
            value = as_utc(value).isoformat()
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
    elif m["lease_owner"] is not None and as_utc(m["run_at"]) > now:
        # run_at is the lease's expiry here, not when the task was due.
        record["run_at"] = now.isoformat()
        result.running += 1
    return record


def import_tasks(
    store: Store,
    lines: Iterable[str],
    *,
    known_names: t.Collection[str] = (),
) -> ImportResult:
    """Insert the tasks of an export in one transaction of their own: all of
    them, or (on an error) none. The caller's session is left alone.

    Every line is checked before anything is written. A waiting task whose
    ``unique_key`` is already taken by a waiting task of the same name is
    skipped, as ``perform(..., unique_key=...)`` would.

    :raises TransferError: a line is not a valid task; the message names it.
    """
    rows = list(_parse(lines))
    result = ImportResult()
    result.unknown_names = {r["name"] for r in rows} - set(known_names)
    with store.write() as conn:
        # In file order, so ids keep the export's order (claims break ties by id).
        chunk: list[dict[str, t.Any]] = []
        for row in rows:
            if row["unique_key"] is None or row["status"] != STATUS_QUEUED:
                chunk.append(row)
                if len(chunk) < IMPORT_CHUNK:
                    continue
            if chunk:
                result.count += len(store.insert(conn, chunk))
                chunk = []
            if row["unique_key"] is not None and row["status"] == STATUS_QUEUED:
                _, new = store.insert_unique(conn, row)
                if new:
                    result.count += 1
                else:
                    result.duplicates += 1
        if chunk:
            result.count += len(store.insert(conn, chunk))
        if result.count:
            store.notify(conn)
    return result


def _parse(lines: Iterable[str]) -> Iterator[dict[str, t.Any]]:
    number = 0
    iterator = iter(lines)
    while True:
        number += 1
        try:
            line = next(iterator)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise TransferError(
                f"Line {number} is not valid UTF-8 ({exc.reason}); an export is"
                " UTF-8 text. Nothing was imported."
            ) from exc
        if not line.strip():
            continue
        try:
            yield _row(json.loads(line))
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise TransferError(
                f"Line {number} is not a task exported by 'flask queue export':"
                f" {detail.rstrip('.')}. Fix or remove the line; nothing was"
                " imported."
            ) from exc


def _row(record: t.Any) -> dict[str, t.Any]:
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    name = _text(record, "name", max_length=MAX_NAME_LENGTH)
    if "data_text" in record:
        data = record["data_text"]
        if not isinstance(data, str) or not validate.is_utf8(data) or "\x00" in data:
            raise ValueError("data_text must be a string of UTF-8 text")
    else:
        try:
            data = encode(name, record["data"])
        except TypeError as exc:  # a TaskDataError, naming the task
            raise ValueError(
                f"its data cannot be stored (string keys, finite numbers, UTF-8"
                f" text, at most {MAX_DEPTH} levels): {exc}"
            ) from exc
    status = record.get("status", STATUS_QUEUED)
    if status not in (STATUS_QUEUED, STATUS_DEAD):
        raise ValueError(f"status must be {STATUS_QUEUED!r} or {STATUS_DEAD!r}")
    created = _time(record, "created")
    unique_key = record.get("unique_key")
    if unique_key is not None:
        validate.text("unique_key", unique_key, error=ValueError)
    failed_error = record.get("failed_error")
    if failed_error is not None and (
        not isinstance(failed_error, str) or not validate.is_utf8(failed_error)
    ):
        raise ValueError("failed_error must be a string of UTF-8 text or null")
    return {
        "name": name,
        "queue": _text(record, "queue", "default", max_length=MAX_QUEUE_LENGTH),
        "priority": _int(record, "priority", minimum=validate.INT32[0]),
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
_EARLIEST = datetime.datetime(1, 1, 2, tzinfo=UTC)
_TOO_LATE = datetime.datetime(9999, 1, 1, tzinfo=UTC)


def _text(
    record: dict[str, t.Any],
    key: str,
    default: t.Any = _MISSING,
    *,
    max_length: int,
) -> str:
    value = record[key] if default is _MISSING else record.get(key, default)
    return validate.text(key, value, error=ValueError, max_length=max_length)


def _int(record: dict[str, t.Any], key: str, *, minimum: int = 0) -> int:
    return validate.whole(key, record.get(key, 0), error=ValueError, minimum=minimum)


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
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        parsed = _TOO_LATE
    if not _EARLIEST <= parsed < _TOO_LATE:
        raise ValueError(f"{key} must be between the years 1 and 9998, got {value!r}")
    return parsed
