"""Blinker signals sent as tasks and workers run.

Each is sent with the Flask app as sender. Receivers get keyword arguments:
``task_id`` (an int, as ``perform`` returns it) and ``task`` (the task name)
for task signals, plus ``duration`` (seconds) where an attempt finished and
``exception`` where it failed. A receiver that raises is logged and skipped; it
never breaks the worker. Receivers run synchronously in the thread that sends:
the worker's for task signals, the caller of ``perform`` for ``task_enqueued``.
"""

from __future__ import annotations

import logging
import typing as t

from blinker import Namespace
from blinker import Signal

logger = logging.getLogger(__name__)

_signals = Namespace()

#: A task was stored by ``perform`` (sent after commit, or at flush with
#: ``commit=False``). Keywords: ``task_id``, ``task``.
task_enqueued = _signals.signal("plainqueue.task-enqueued")
#: A worker starts an attempt. Keywords: ``task_id``, ``task``.
task_started = _signals.signal("plainqueue.task-started")
#: An attempt succeeded. Keywords: ``task_id``, ``task``, ``duration``.
task_succeeded = _signals.signal("plainqueue.task-succeeded")
#: An attempt failed (every failed attempt). Keywords: ``task_id``, ``task``,
#: ``duration``, ``exception``.
task_failed = _signals.signal("plainqueue.task-failed")
#: A task ran out of retries and is kept as dead. Keywords as ``task_failed``.
task_dead = _signals.signal("plainqueue.task-dead")
#: A worker started. Keywords: ``worker_id``.
worker_started = _signals.signal("plainqueue.worker-started")
#: A worker stopped. Keywords: ``worker_id``.
worker_stopped = _signals.signal("plainqueue.worker-stopped")


def send(signal: Signal, sender: object, **kwargs: t.Any) -> None:
    """Send ``signal`` to each receiver in turn, logging (not raising) a
    receiver's exception so one bad receiver neither breaks the caller nor
    starves the others. A ``KeyboardInterrupt`` or ``SystemExit`` is raised
    again once every receiver ran.
    """
    if not signal.receivers:
        return
    interrupt: BaseException | None = None
    for receiver in signal.receivers_for(sender):
        try:
            receiver(sender, **kwargs)
        except BaseException as exc:
            logger.exception(
                "A receiver of %s raised; ignored.",
                getattr(signal, "name", repr(signal)),
                extra={"task_id": kwargs.get("task_id"), "task": kwargs.get("task")},
            )
            if not isinstance(exc, Exception) and interrupt is None:
                interrupt = exc
    if interrupt is not None:
        # KeyboardInterrupt or SystemExit: the others heard the signal first;
        # the sender decides (a worker logs it, your own thread gets it).
        raise interrupt
