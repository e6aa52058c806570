"""One watcher of task changes per app and process, shared by every open
stream (:meth:`~flask_plainqueue.PlainQueue.stream`): the SQLite change probe
or a PostgreSQL LISTEN connection, started by the first subscriber and
stopped when the last one leaves, so a hundred open streams cost one
connection, not a hundred.

A wake-up carries no row: each woken stream reads its own task by primary
key. On SQLite every commit wakes every stream (the probe cannot tell which
rows changed); on PostgreSQL a notification names the changed tasks' ids.
"""

from __future__ import annotations

import logging
import os
import threading
import typing as t
import weakref

if t.TYPE_CHECKING:
    from .backend import Watcher
    from .store import Store

logger = logging.getLogger(__name__)


class Subscription:
    """One stream's interest in one task: :attr:`changed` is set when the
    task may have changed."""

    __slots__ = ("task_id", "changed", "__weakref__")

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        #: Set by the hub's watcher; the stream clears it before reading.
        self.changed = threading.Event()


class ChangeHub:
    """The subscriptions of one app's streams in this process, and the one
    watcher that wakes them.

    :param store: the app's queue storage.
    """

    def __init__(self, store: Store) -> None:
        self._backend = store.backend
        self._lock = threading.Lock()
        self._subscribers: dict[int, set[Subscription]] = {}
        self._watcher: Watcher | None = None

    @property
    def complete(self) -> bool:
        """Whether every committed change wakes the subscribers now; if not,
        streams read their row now and then too (see
        :attr:`.Backend.changes_complete`)."""
        watcher = self._watcher
        return (
            self._backend.changes_complete and watcher is not None and watcher.reliable
        )

    def subscribe(self, task_id: int) -> Subscription:
        """Wake the returned subscription when task ``task_id`` may have
        changed, until :meth:`unsubscribe`; the first subscriber starts the
        watcher."""
        subscription = Subscription(task_id)
        with self._lock:
            self._subscribers.setdefault(task_id, set()).add(subscription)
            if self._watcher is None:
                self._watcher = self._backend.change_watcher(
                    self._on_change, f"streams-{os.getpid()}"
                )
                if self._watcher is not None:
                    self._watcher.start()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop waking ``subscription``; the last one out stops the watcher."""
        with self._lock:
            group = self._subscribers.get(subscription.task_id)
            if group is not None:
                group.discard(subscription)
                if not group:
                    del self._subscribers[subscription.task_id]
            watcher = None
            if not self._subscribers:
                watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def close(self) -> None:
        """Stop the watcher (the app is gone)."""
        with self._lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def subscribers(self) -> int:
        """How many subscriptions are open (for tests)."""
        with self._lock:
            return sum(len(group) for group in self._subscribers.values())

    @property
    def watching(self) -> bool:
        """Whether a watcher runs (for tests)."""
        return self._watcher is not None

    def _on_change(self, payload: str | None) -> None:
        with self._lock:
            if not payload:
                # Any task (SQLite), or notifications may have been missed.
                woken = [s for group in self._subscribers.values() for s in group]
            else:
                woken = []
                for part in payload.split(","):
                    try:
                        key = int(part)
                    except ValueError:
                        logger.debug("ignoring a change notice %r", payload)
                        continue
                    woken.extend(self._subscribers.get(key, ()))
        for subscription in woken:
            subscription.changed.set()


_hubs: weakref.WeakKeyDictionary[Store, ChangeHub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def hub_for(store: Store) -> ChangeHub:
    """The change hub of ``store`` (one app's queue) in this process."""
    with _hubs_lock:
        hub = _hubs.get(store)
        if hub is None:
            hub = _hubs[store] = ChangeHub(store)
            # A dropped app (tests make many) takes its watcher with it.
            weakref.finalize(store, hub.close)
        return hub
