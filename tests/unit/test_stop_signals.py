"""The handler of ``flask queue work`` for SIGTERM and SIGINT."""

from __future__ import annotations

import signal

from flask_plainqueue.cli import StopSignals


def test_a_signal_during_the_handler_is_applied_after_it_not_inside_it() -> None:
    """A second SIGTERM that lands while the first one's ``stop`` runs (Python
    runs the handler again right there) once called ``stop`` inside ``stop``
    and hung on the lock the outer call held. It is applied after the outer
    call returns, still before the handler does."""
    calls: list[float | None] = []
    depth = 0
    deepest = 0

    def stop(grace: float | None) -> None:
        nonlocal depth, deepest
        depth += 1
        deepest = max(deepest, depth)
        calls.append(grace)
        if len(calls) == 1:
            handler(signal.SIGTERM)  # the second signal, mid-stop
        depth -= 1

    handler = StopSignals(stop, 30.0)
    handler(signal.SIGTERM)
    assert calls == [30.0, 0]
    assert deepest == 1


def test_later_signals_hand_back_at_once() -> None:
    calls: list[float | None] = []
    handler = StopSignals(calls.append, None)
    handler(signal.SIGTERM)
    handler(signal.SIGINT)
    handler(signal.SIGTERM)
    assert calls == [None, 0, 0]
