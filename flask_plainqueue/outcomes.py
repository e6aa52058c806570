"""What an attempt's end stores: the error text of a failed attempt, and the
result of a succeeded one that is kept (``keep_succeeded``)."""

from __future__ import annotations

import datetime
import logging
import traceback

from .claims import ClaimedTask
from .claims import Kept
from .enqueue import to_json

logger = logging.getLogger("flask_plainqueue.worker")


#: The longest ``failed_error`` stored (characters): a longer error keeps its
#: beginning and its end, where the exception's type and message are.
MAX_ERROR_LENGTH = 64 * 1024


def format_error(exc: BaseException) -> str:
    """The error's type, message and traceback, as stored in ``failed_error``:
    text every database can store (no NUL, no lone surrogate), at most
    :data:`MAX_ERROR_LENGTH` characters."""
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:  # a __str__ that raises
        text = f"{type(exc).__name__} (its message could not be formatted)"
    return storable(text)


def storable(text: str, limit: int = MAX_ERROR_LENGTH) -> str:
    """``text`` made storable: NUL and lone surrogates replaced, and cut in the
    middle to ``limit`` characters."""
    text = text.replace("\x00", "\\x00")
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        # The marker's count has at most as many digits as len(text).
        keep = (limit - len(f"\n[... {len(text)} characters cut ...]\n")) // 2
        cut = len(text) - 2 * keep
        text = f"{text[:keep]}\n[... {cut} characters cut ...]\n{text[-keep:]}"
    return text


def kept(
    task: ClaimedTask,
    value: object,
    *,
    keep: float,
    now: datetime.datetime,
    progress: str | None,
) -> Kept:
    """The succeeded attempt of ``task`` to keep for ``keep`` seconds, with
    ``value`` (the task's return value) as its result.

    A value that is not JSON is stored as ``null``, with a warning naming its
    type: the task still succeeded (its side effects happened).
    """
    try:
        result = to_json(value)
    except (TypeError, ValueError, RecursionError) as exc:
        logger.warning(
            "Task %s (%s) returned a %s, which is not JSON-serialisable (%s);"
            " it succeeded, and its result is stored as null.",
            task.id,
            task.name,
            type(value).__name__,
            exc,
            extra={"task_id": task.id, "task": task.name},
        )
        result = "null"
    expires = now + datetime.timedelta(seconds=keep)
    return Kept(task.id, task.attempts, result, now, expires, progress)
