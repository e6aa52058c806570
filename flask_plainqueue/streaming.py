"""``queue.stream(task_id)``: a task's state and progress as server-sent
events, for an ``EventSource`` in the browser.

Events (``data`` is JSON):

- ``state``: ``{"state": ..., "attempts": ..., "error": ...}`` when the task's
  state or attempt changes (``error``: the last error's first line, or
  ``null``);
- ``progress``: the value the task last reported, when it changes;
- ``done``, last: ``{"state": "succeeded", "result": ...}``,
  ``{"state": "dead", "error": ...}``, or ``{"state": "gone"}`` (the row is
  not there: deleted, succeeded without being kept, pruned, or never stored).

Each event's id says what the client has been sent:
``<seq>.<state>.<attempts>.<progress digest>``, ``seq`` counting the events
of this client across reconnections. A reconnecting ``EventSource`` sends the
last id back (``Last-Event-ID``), and the stream sends only what differs from
it; after ``done`` it answers ``204 No Content``, which tells the browser not
to reconnect.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import typing as t
from collections.abc import Iterator

from flask import has_request_context
from flask import request
from flask import Response

from . import admin
from . import validate
from .changes import hub_for
from .exceptions import InvalidArgument
from .info import error_summary
from .info import TaskInfo
from .schema import TaskState

if t.TYPE_CHECKING:
    from flask import Flask

    from .changes import ChangeHub
    from .store import Store

logger = logging.getLogger(__name__)

#: Seconds between ``: keep-alive`` comment lines while nothing else is sent,
#: so proxies do not close an idle stream (``queue.stream(..., keepalive=)``).
KEEPALIVE = 15.0
#: Where the change watcher does not see every change (PostgreSQL: a claim, a
#: success that is not kept; a lost LISTEN connection), a stream also reads
#: its task's row this often (seconds): one primary-key read.
RECHECK_INTERVAL = 0.5
#: The shortest time between two reads of a stream's row (seconds): on a busy
#: SQLite database every commit wakes every stream.
MIN_READ_GAP = 0.02

#: The states after which a stream ends; ``gone`` is a row that is not there.
GONE = "gone"
_FINAL = frozenset({TaskState.SUCCEEDED.value, TaskState.DEAD.value, GONE})
_NO_PROGRESS = "-"
KEEPALIVE_LINE = ": keep-alive\n\n"


class Seen(t.NamedTuple):
    """What a client has been sent: the event id, parsed."""

    seq: int
    state: str
    attempts: int
    progress: str

    @property
    def event_id(self) -> str:
        return f"{self.seq}.{self.state}.{self.attempts}.{self.progress}"

    @classmethod
    def parse(cls, text: str | None) -> Seen | None:
        """An event id sent back as ``Last-Event-ID``, or ``None`` when absent
        or not one of ours (then everything is sent again)."""
        if not text:
            return None
        parts = text.strip().split(".")
        if len(parts) != 4:
            return None
        seq, state, attempts, progress = parts
        if not (seq.isdigit() and attempts.isdigit()) or len(seq) > 18:
            return None
        if state not in _STATES or len(attempts) > 18:
            return None
        return cls(int(seq), state, int(attempts), progress)

    @property
    def done(self) -> bool:
        return self.state in _FINAL


_STATES = frozenset({s.value for s in TaskState} | {GONE})


def _json(value: object) -> str:
    # Compact, as the stored progress and result are.
    return json.dumps(value, separators=(",", ":"))


def digest(progress_json: str | None) -> str:
    """A short fingerprint of a progress value, for event ids."""
    if progress_json is None:
        return _NO_PROGRESS
    return hashlib.blake2b(progress_json.encode(), digest_size=6).hexdigest()


def message(event: str, data: str, event_id: str) -> str:
    """One server-sent event."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\nid: {event_id}\n{lines}\n"


def changes(info: TaskInfo | None, seen: Seen | None) -> tuple[list[str], Seen]:
    """The events that bring a client who was sent ``seen`` up to ``info``
    (``None``: the row is gone), and what it has been sent after them."""
    seq = 0 if seen is None else seen.seq
    out: list[str] = []
    if info is None:
        now = Seen(seq + 1, GONE, 0 if seen is None else seen.attempts, _NO_PROGRESS)
        out.append(message("done", _json({"state": GONE}), now.event_id))
        return out, now
    state = info.state.value
    mark = digest(info.progress_json)
    current = Seen(seq, state, info.attempts, mark)

    def add(event: str, data: str) -> None:
        nonlocal current
        current = current._replace(seq=current.seq + 1)
        out.append(message(event, data, current.event_id))

    final = state in _FINAL
    if not final and (
        seen is None or (state, info.attempts) != (seen.state, seen.attempts)
    ):
        error = error_summary(info.error) or None
        add(
            "state",
            _json({"state": state, "attempts": info.attempts, "error": error}),
        )
    if info.progress_json is not None and (seen is None or mark != seen.progress):
        add("progress", info.progress_json)
    if final:
        body: dict[str, t.Any] = {"state": state}
        if info.state is TaskState.SUCCEEDED:
            body["result"] = info.result
        else:
            body["error"] = error_summary(info.error)
        add("done", _json(body))
    return out, current


def events(
    store: Store,
    hub: ChangeHub,
    task_id: int,
    seen: Seen | None,
    keepalive: float,
) -> Iterator[str]:
    """The stream's body: read the row, send what changed, wait for the hub
    (or the keep-alive, or the recheck), and again, until the task is done.

    Subscribes on the first ``next()`` and unsubscribes when it ends, also when
    the server closes it because the client went away (``GeneratorExit``).
    """
    subscription = hub.subscribe(task_id)
    try:
        last_read = -MIN_READ_GAP
        first = True
        next_ping = time.monotonic() + keepalive
        while True:
            gap = last_read + MIN_READ_GAP - time.monotonic()
            if gap > 0:
                time.sleep(gap)
            subscription.changed.clear()
            # Asked before the read: a watcher that became reliable after it
            # may have taken a change made meanwhile as its starting point.
            complete = hub.complete
            last_read = time.monotonic()
            try:
                info = admin.get_task(store, task_id)
            except Exception:
                # The client reconnects with its Last-Event-ID and resumes.
                logger.exception("Stream of task %s: reading it failed", task_id)
                return
            out, seen = changes(info, seen)
            if out:
                yield "".join(out)
                next_ping = time.monotonic() + keepalive
            elif first:
                # Something at once, so the server sends the headers now and
                # the browser's EventSource opens (a resumed, unchanged task).
                yield KEEPALIVE_LINE
                next_ping = time.monotonic() + keepalive
            first = False
            if seen.done:
                return
            now = time.monotonic()
            wait = next_ping - now
            if not complete:
                wait = min(wait, last_read + RECHECK_INTERVAL - now)
            subscription.changed.wait(max(wait, 0.0))
            if time.monotonic() >= next_ping:
                yield KEEPALIVE_LINE
                next_ping = time.monotonic() + keepalive
    finally:
        hub.unsubscribe(subscription)


class QueueStreaming:
    """Server-sent events of a task, mixed into
    :class:`~flask_plainqueue.PlainQueue`."""

    if t.TYPE_CHECKING:
        # Provided by PlainQueue.
        def store(self, app: Flask | None = None) -> Store: ...

    def stream(
        self,
        task_id: int,
        *,
        keepalive: float = KEEPALIVE,
        last_event_id: str | None = None,
    ) -> Response:
        """A ``text/event-stream`` response of task ``task_id``'s state and
        progress, for the app's own view (which decides who may see it):

        .. code-block:: python

            @app.get("/reports/<int:task_id>/events")
            @login_required
            def report_events(task_id):
                return queue.stream(task_id)

        Sends ``state`` and ``progress`` events as they change and ``done``
        when the task succeeds, dies, or its row is gone (an unknown id gets
        ``done`` at once); see :ref:`streaming`.

        :param keepalive: seconds between keep-alive comment lines.
        :param last_event_id: resume after this event id; default the
            request's ``Last-Event-ID`` header.
        :raises InvalidArgument: ``task_id`` is not an int, or ``keepalive``
            not a number of seconds above 0.

        .. versionadded:: 0.1
        """
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            raise InvalidArgument(
                f"task_id must be an int, the id perform() returned; got {task_id!r}."
            )
        interval = validate.seconds(
            "keepalive", keepalive, error=InvalidArgument, positive=True
        )
        if last_event_id is None and has_request_context():
            last_event_id = request.headers.get("Last-Event-ID")
        seen = Seen.parse(last_event_id)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if seen is not None and seen.done:
            # The client had the end: 204 stops EventSource reconnecting.
            return Response(status=204, headers=headers)
        store = self.store()
        body = events(store, hub_for(store), task_id, seen, interval)
        return Response(body, mimetype="text/event-stream", headers=headers)
