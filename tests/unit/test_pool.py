"""The task pool: every call of a batch runs exactly once, at once, whether the
claiming thread helps (threads woken one at a time) or not."""

from __future__ import annotations

import threading
import typing as t

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from flask_plainqueue.pool import TaskPool


@pytest.mark.parametrize("helped", [True, False], ids=["helped", "pool-only"])
def test_every_call_of_a_batch_runs_at_once(helped: bool) -> None:
    """Six calls that each wait for all six: they finish only if all run
    together. A helped batch needs one thread fewer: the caller runs one."""
    size = 6
    barrier = threading.Barrier(size, timeout=30)
    pool = TaskPool(size - 1 if helped else size, "test")
    try:
        batch = pool.run_batch(
            lambda i: (barrier.wait(), i)[1], [(i,) for i in range(size)], helped=helped
        )
        if helped:
            batch.run_pending()
        assert batch.wait(60)
        assert [batch.result(i) for i in range(size)] == list(range(size))
    finally:
        pool.shutdown()


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=6),
    workers=st.integers(min_value=1, max_value=8),
    helped=st.booleans(),
)
def test_each_call_runs_exactly_once(
    sizes: list[int], workers: int, helped: bool
) -> None:
    pool = TaskPool(workers, "test")
    runs: list[tuple[int, int]] = []
    lock = threading.Lock()

    def call(b: int, i: int) -> int:
        with lock:
            runs.append((b, i))
        return b * 1000 + i

    try:
        for b, size in enumerate(sizes):
            batch = pool.run_batch(call, [(b, i) for i in range(size)], helped=helped)
            if helped:
                batch.run_pending()
            assert batch.wait(60)
            assert batch.finished() == list(range(size))
            assert [batch.result(i) for i in range(size)] == [
                b * 1000 + i for i in range(size)
            ]
    finally:
        pool.shutdown()
    assert sorted(runs) == [(b, i) for b, size in enumerate(sizes) for i in range(size)]


def test_a_helped_batch_ends_when_the_pool_is_shut_down_under_it() -> None:
    """A pool is shut down when a batch of another claim loop times out; the
    calls of a helped batch that no thread took then run on the caller."""
    pool = TaskPool(1, "test")
    started = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    def call(i: int) -> int:
        ran.append(threading.current_thread().name)
        if i == 0:
            started.set()
            assert release.wait(30)
        return i

    batch = pool.run_batch(call, [(i,) for i in range(5)], helped=True)
    # The pool's one thread takes the first call and blocks in it.
    assert started.wait(30)
    pool.shutdown()
    batch.run_pending()
    release.set()
    assert batch.wait(30)
    assert [batch.result(i) for i in range(5)] == list(range(5))
    assert ran.count(threading.current_thread().name) == 4


def test_an_error_is_the_result_of_its_call_only() -> None:
    pool = TaskPool(2, "test")

    def call(i: int) -> int:
        if i == 1:
            raise KeyError(i)
        return i

    try:
        batch: t.Any = pool.run_batch(call, [(i,) for i in range(3)], helped=True)
        batch.run_pending()
        assert batch.wait(30)
        assert batch.result(0) == 0 and batch.result(2) == 2
        with pytest.raises(KeyError):
            batch.result(1)
    finally:
        pool.shutdown()
