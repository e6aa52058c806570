"""Writing a worker's finished tasks outside its claims, and what its claim
loops hold while their claims fail (a full disk, a database that is away, a
row the database refuses): which loops hold some, so that no other loop's
claim hands their expired leases back and runs them again; and writing them
apart when the database refuses one, so that one row cannot stop a loop for
good."""

from __future__ import annotations

import datetime
import logging
import threading
import typing as t
from collections.abc import Callable

from .claim_failures import ClaimFailures
from .claims import Outcomes
from .presence import Presence

if t.TYPE_CHECKING:
    from .store import Store

logger = logging.getLogger("flask_plainqueue.worker")

#: After this many claims in a row that failed while holding finished tasks,
#: a loop checks whether the database refuses one of their outcomes (see
#: :meth:`Unwritten.write_apart`), and again after as many more.
REFUSED_AFTER = 3


class Unwritten:
    """What one worker's claim loops hold unwritten, and what follows from it.

    :param owner: the worker's id.
    :param store: where outcomes are written.
    :param presence: its heartbeat tells whether the database takes writes.
    :param failures: reports claims that fail and work again.
    :param clock: the worker's clock.
    """

    def __init__(
        self,
        owner: str,
        store: Store,
        presence: Presence,
        failures: ClaimFailures,
        clock: Callable[[], datetime.datetime],
    ) -> None:
        self.owner = owner
        self.store = store
        self.presence = presence
        self.failures = failures
        self.clock = clock
        self._lock = threading.Lock()
        # The claim loops (thread ids) holding finished tasks that a failed
        # claim could not write.
        self._loops: set[int] = set()

    def settle(self, outcomes: Outcomes, now: datetime.datetime) -> None:
        """Write ``outcomes`` in a transaction of their own, and warn about
        those whose rows were no longer this worker's (dropped: fenced by
        owner and attempt)."""
        if not outcomes:
            return
        ids = outcomes.ids()
        written = self.store.settle(self.owner, outcomes, now)
        if written < len(ids):
            logger.warning(
                "Worker %s: %d of %d finished task(s) %s were no longer this"
                " worker's when their outcome was written: the lease ended (the"
                " worker was paused, or cut off from the database) and another"
                " worker took the task, or it was deleted. This attempt's outcome"
                " is dropped (delivery is at-least-once).",
                self.owner,
                len(ids) - written,
                len(ids),
                ids,
            )

    def written(self) -> None:
        """This thread's claim (or settle) committed: claiming works, and what
        the thread held is written. Said at once, not after the batch it
        claimed: a batch that ends while other loops' claims fail must not
        report a recovery, nor keep the others from sweeping while it runs."""
        self.failures.succeeded()
        self.hold(False)

    def hold(self, held: bool) -> None:
        """Record whether this claim loop holds finished tasks that its last
        claim failed to write (see :meth:`may_sweep`)."""
        loop = threading.get_ident()
        if held or loop in self._loops:
            with self._lock:
                if held:
                    self._loops.add(loop)
                else:
                    self._loops.discard(loop)

    def may_sweep(self) -> bool:
        """Whether this thread's claim may hand back expired leases: not while
        another claim loop holds finished tasks it could not write, whose
        leases may have ended meanwhile; a claim that handed them back would
        take them and run them again. (This loop's own are written first, in
        the same transaction.)"""
        if not self._loops:
            return True
        with self._lock:
            return self._loops <= {threading.get_ident()}

    def write_apart(self, outcomes: Outcomes) -> None:
        """Claims holding ``outcomes`` keep failing. Write them without a
        claim; if that fails too while the database takes other writes (a
        heartbeat), it refuses some of them (a trigger, a constraint): write
        each on its own and give up those it refuses, so that one row cannot
        stop the loop for good. Their tasks run again when their leases end.
        While the database takes no writes at all (away, a full disk) all are
        kept for later."""
        now = self.clock()
        try:
            self.settle(outcomes, now)
            return
        except Exception:
            pass
        if not self.presence.beat():
            return
        for task_id, alone in outcomes.each():
            try:
                self.settle(alone, now)
            except Exception as exc:
                logger.error(
                    "Worker %s: the database refuses to record the outcome of task"
                    " %s (%s); it is given up, and the task runs again when its"
                    " lease ends.",
                    self.owner,
                    task_id,
                    exc,
                    extra={"task_id": task_id},
                )
        outcomes.clear()
