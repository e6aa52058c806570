"""The handler of ``flask queue work`` for SIGTERM and SIGINT."""

from __future__ import annotations

import signal
import threading
import typing as t
from collections.abc import Iterator

import pytest

from flask_plainqueue.cli import StopSignals

#: Generous: these wait for a thread on a loaded machine, never for a timer.
WAIT = 10.0


class Recorder:
    """A ``stop`` that records its calls and lets a test wait for them."""

    def __init__(self, lock: threading.Lock | None = None) -> None:
        self.lock = lock
        self.calls: list[float | None | str] = []
        self.threads: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, grace: float | None) -> None:
        call: float | None | str = grace
        if self.lock is not None:
            # The worker's stop() takes locks; blocking on one the interrupted
            # thread holds is the hang this guards against.
            if not self.lock.acquire(timeout=WAIT / 2):
                call = "deadlock"
            else:
                self.lock.release()
        with self._changed:
            self.calls.append(call)
            self.threads.append(threading.current_thread().name)
            self._changed.notify_all()

    def wait_for(self, n: int) -> list[float | None | str]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.calls) >= n, WAIT)
            return list(self.calls)


@pytest.fixture
def handlers() -> Iterator[t.Callable[..., StopSignals]]:
    made: list[StopSignals] = []

    def make(
        stop: t.Callable[[float | None], None], grace: float | None
    ) -> StopSignals:
        handler = StopSignals(stop, grace)
        made.append(handler)
        return handler

    yield make
    for handler in made:
        handler.close()


def test_a_signal_while_the_main_thread_holds_a_lock_stop_needs_does_not_hang(
    handlers: t.Callable[..., StopSignals],
) -> None:
    """Python runs the handler wherever the main thread is, also inside a lock
    that ``stop`` needs (a signal landing in ``Event.wait``'s condition, or in
    the worker's close()). Calling ``stop`` from the handler then waited on
    that lock forever. The handler only records the signal; ``stop`` runs on
    the handler's own thread once the lock is free."""
    lock = threading.Lock()
    stop = Recorder(lock)
    handler = handlers(stop, 30.0)
    with lock:
        handler(signal.SIGTERM)  # returns at once: nothing waits on the lock
        assert stop.calls == []
    assert stop.wait_for(1) == [30.0]
    assert stop.threads == ["plainqueue-signals"]


def test_a_signal_during_stop_is_applied_after_it_not_inside_it(
    handlers: t.Callable[..., StopSignals],
) -> None:
    """A second SIGTERM that lands while the first one's ``stop`` runs once
    called ``stop`` inside ``stop``; it is applied after the first returns."""
    depth = 0
    deepest = 0
    calls: list[float | None] = []
    applied = threading.Event()

    def stop(grace: float | None) -> None:
        nonlocal depth, deepest
        depth += 1
        deepest = max(deepest, depth)
        calls.append(grace)
        if len(calls) == 1:
            handler(signal.SIGTERM)  # the second signal, mid-stop
        else:
            applied.set()
        depth -= 1

    handler = handlers(stop, 30.0)
    handler(signal.SIGTERM)
    assert applied.wait(WAIT)
    assert calls == [30.0, 0]
    assert deepest == 1


def test_later_signals_hand_back_at_once_in_order(
    handlers: t.Callable[..., StopSignals],
) -> None:
    stop = Recorder()
    handler = handlers(stop, None)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
        handler(signum)
    assert stop.wait_for(3) == [None, 0, 0]


def test_a_storm_of_signals_neither_blocks_the_handler_nor_loses_the_first(
    handlers: t.Callable[..., StopSignals],
) -> None:
    """More signals than the pipe holds wake-ups: the handler never waits to
    write, and every recorded signal is applied."""
    lock = threading.Lock()
    stop = Recorder(lock)
    handler = handlers(stop, 5.0)
    with lock:  # stop() cannot run: the pipe fills up
        for _ in range(70_000):
            handler(signal.SIGTERM)
    calls = stop.wait_for(70_000)
    assert calls[0] == 5.0
    assert set(calls[1:]) == {0}


def test_a_failing_stop_does_not_end_the_handling_of_later_signals(
    handlers: t.Callable[..., StopSignals], caplog: pytest.LogCaptureFixture
) -> None:
    stop = Recorder()
    failed = False

    def flaky(grace: float | None) -> None:
        nonlocal failed
        if not failed:
            failed = True
            raise RuntimeError("boom")
        stop(grace)

    handler = handlers(flaky, 3.0)
    handler(signal.SIGTERM)
    handler(signal.SIGTERM)
    assert stop.wait_for(1) == [0]
    assert "Stopping the worker on SIGTERM failed" in caplog.text


def test_after_close_signals_are_ignored(
    handlers: t.Callable[..., StopSignals],
) -> None:
    stop = Recorder()
    handler = handlers(stop, 1.0)
    handler(signal.SIGTERM)
    handler.close()
    assert stop.calls == [1.0]  # close() applied what was recorded
    handler(signal.SIGTERM)
    handler.close()
    assert stop.calls == [1.0]
