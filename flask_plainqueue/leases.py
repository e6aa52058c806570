"""The leases of running tasks: extended while they run, handed back when the
shutdown grace period is over, by one watchdog thread per worker."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
import typing as t
from collections.abc import Callable
from collections.abc import Sequence

from .claims import ClaimedTask
from .clock import Clock
from .failure_log import FailureLog

if t.TYPE_CHECKING:
    from .store import Store

logger = logging.getLogger("flask_plainqueue.worker")

#: How often the watchdog looks at running tasks (seconds).
WATCH_INTERVAL = 0.1


@dataclasses.dataclass(eq=False)
class Held:
    """Tasks a claim loop runs now, as the watchdog sees them."""

    tasks: Sequence[ClaimedTask]
    #: ``False`` for an atomic task on SQLite: it holds the write lock until it
    #: commits, so no other worker can claim its row meanwhile, and an
    #: extension would only wait for that lock.
    extendable: bool
    #: Runs on its claim loop's thread, which cannot hand it back while it
    #: runs: the watchdog does. (A pool batch's loop hands back its own.)
    inline: bool
    extended: float
    #: Ids no longer ours: handed back, or settled by a timeout.
    released: set[int] = dataclasses.field(default_factory=set)

    def running(self) -> list[ClaimedTask]:
        return [task for task in self.tasks if task.id not in self.released]


class Leases:
    """Keeps the leases of one worker's running tasks.

    Every ``lease_seconds / 3`` the leases of running tasks move to ``now +
    lease_seconds``; once the worker's stop deadline has passed, what still
    runs is handed back, due at once, for another worker.

    :param store: writes the extensions and hand-backs.
    :param owner: the worker's id (the lease owner).
    :param lease_seconds: the lease length.
    :param clock: the worker's clock.
    :param deadline: the worker's stop deadline (``time.monotonic()``), if any;
        asked each time, so a later, earlier deadline replaces it.
    """

    def __init__(
        self,
        store: Store,
        owner: str,
        lease_seconds: float,
        clock: Clock,
        deadline: Callable[[], float | None],
    ) -> None:
        self.store = store
        self.owner = owner
        self.lease = datetime.timedelta(seconds=lease_seconds)
        self.extend_every = lease_seconds / 3
        self.clock = clock
        self.deadline = deadline
        #: Tasks handed back because the grace period ran out.
        self.handed_back = 0
        self._held: list[Held] = []
        self._lock = threading.Lock()
        self._busy = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._extend_failures = FailureLog(
            logger,
            owner,
            failed="Worker %s: could not extend leases; will try again",
            still="Worker %s: extending leases still fails after %.0fs: %s",
            works="Worker %s: extending leases works again after %.1fs of failures",
        )

    def hold(
        self, tasks: Sequence[ClaimedTask], *, extendable: bool, inline: bool
    ) -> Held:
        """Watch ``tasks`` until :meth:`drop`."""
        held = Held(tasks, extendable, inline, time.monotonic())
        with self._lock:
            self._held.append(held)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._watch, name="plainqueue-watchdog", daemon=True
                )
                self._thread.start()
            if not self._busy.is_set():
                self._busy.set()
        return held

    def drop(self, held: Held) -> None:
        """Stop watching ``held`` (its tasks finished)."""
        with self._lock:
            try:
                self._held.remove(held)
            except ValueError:
                pass

    def release(self, held: Held, tasks: Sequence[ClaimedTask]) -> None:
        """Forget ``tasks`` of ``held``: no longer ours to extend or hand back."""
        with self._lock:
            held.released.update(task.id for task in tasks)

    def hand_back(self, held: Held) -> int:
        """Hand back the tasks of ``held`` that still run (once each); return how
        many rows were still this worker's."""
        with self._lock:
            tasks = held.running()
            held.released.update(task.id for task in tasks)
        if not tasks:
            return 0
        ids = [task.id for task in tasks]
        handed = self.store.release(self.owner, ids, self.clock())
        self.handed_back += len(ids)
        logger.warning(
            "Worker %s: shutdown grace period over; handed back %d of %d unfinished"
            " task(s): %s",
            self.owner,
            handed,
            len(ids),
            ids,
        )
        return handed

    def extend(self, tasks: Sequence[ClaimedTask]) -> None:
        """Move the leases of ``tasks`` forward now."""
        ids = [task.id for task in tasks]
        try:
            held = self.store.extend(self.owner, ids, self.clock() + self.lease)
        except Exception as exc:
            self._extend_failures.failed(exc)
            return
        self._extend_failures.succeeded()
        if held < len(ids):
            logger.warning(
                "Worker %s lost the lease of %d running task(s); another worker may"
                " run them again (delivery is at-least-once).",
                self.owner,
                len(ids) - held,
            )

    def close(self) -> None:
        """Stop the watchdog thread and wait for it, so nothing of the worker
        (and its app) outlives this call."""
        with self._lock:
            self._closed = True
            self._closing.set()
            self._busy.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def _watch(self) -> None:
        while True:
            try:
                if not self._watch_once():
                    return
            except BaseException:  # the watchdog must outlive any one failure
                logger.exception("Worker %s: the lease watchdog failed", self.owner)

    def _watch_once(self) -> bool:
        """One look at the running tasks; ``False`` once closed."""
        self._busy.wait()
        # Look a tenth of a second later, not at once: most tasks end within
        # that, and waking per task would cost each one a thread switch.
        if self._closing.wait(WATCH_INTERVAL):
            return False
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return False
            if not self._held:
                self._busy.clear()
                return True
            held = list(self._held)
        deadline = self.deadline()
        if deadline is not None and now >= deadline:
            for item in held:
                if not item.inline:
                    continue
                try:
                    self.hand_back(item)
                except Exception:
                    logger.exception("Worker %s: could not hand back tasks", self.owner)
            return True
        due = [
            item
            for item in held
            if item.extendable and now - item.extended >= self.extend_every
        ]
        for item in due:
            item.extended = now
        tasks = [task for item in due for task in item.running()]
        if tasks:
            self.extend(tasks)
        return True
