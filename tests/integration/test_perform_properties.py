"""Property: whatever ``perform`` and ``perform_many`` are given, either the
task receives exactly the data given, or a ``PlainQueueError`` naming the
argument is raised and nothing is written; and a worker running beside keeps
processing. On SQLite and PostgreSQL (the trust issue's property test)."""

from __future__ import annotations

import json
import math
import threading
import time
import typing as t

import pytest
from conftest import Env
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from flask_plainqueue import InvalidArgument
from flask_plainqueue import PlainQueueError
from flask_plainqueue import TaskDataError

#: Text as users send it, lone surrogates and NUL included.
TEXT = st.text(st.characters(codec=None), max_size=20)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(TEXT | st.integers(-3, 3), inner, max_size=4)
    ),
    max_leaves=12,
)
DELAYS = st.none() | st.sampled_from([0, 0.0, -1, math.nan, math.inf, 1e12, "1", True])
PRIORITIES = st.none() | st.integers(-(2**33), 2**33) | st.sampled_from([1.5, "1"])
UNIQUE_KEYS = st.none() | st.text(st.characters(codec=None), max_size=300)


def _wait_until(condition: t.Callable[[], bool], timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_perform_round_trips_or_refuses_by_name(env: Env, app_ctx: None) -> None:
    queue = env.queue
    received: dict[int, object] = {}
    lock = threading.Lock()

    @queue.task(name="echo", batch_size=10)
    def echo(data: list[t.Any]) -> None:
        with lock:
            received[data[0]] = data[1]

    expected: dict[int, object] = {}
    counter = iter(range(10**9))
    worker = queue.worker(env.app)
    thread = threading.Thread(target=worker.run)
    thread.start()

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        data=JSONISH,
        delay=DELAYS,
        priority=PRIORITIES,
        unique_key=UNIQUE_KEYS,
        many=st.booleans(),
    )
    def check(
        data: t.Any, delay: object, priority: object, unique_key: t.Any, many: bool
    ) -> None:
        token = next(counter)
        before = queue.count()
        kwargs: dict[str, t.Any] = {"delay": delay, "priority": priority}
        try:
            if many:
                ids = queue.perform_many(echo, [[token, data]], **kwargs)
                new = True
            else:
                task_id = queue.perform(
                    echo, [token, data], unique_key=unique_key, **kwargs
                )
                ids, new = [task_id], task_id.new
        except PlainQueueError as exc:
            assert isinstance(exc, (InvalidArgument, TaskDataError))
            named = ("data", "delay", "priority", "unique_key")
            assert any(name in str(exc) for name in named), str(exc)
            # Nothing was written (the worker may have removed finished rows).
            assert queue.count() <= before
            env.db.session.rollback()
            return
        assert all(isinstance(i, int) for i in ids)
        if new:
            expected[token] = data

    try:
        check()
        assert _wait_until(lambda: len(received) >= len(expected))
        assert received == expected
        assert expected, "no generated input was valid: the strategy is wrong"
    finally:
        worker.stop(grace=10)
        thread.join(60)
    assert not thread.is_alive()


@pytest.mark.parametrize("items", ["abc", b"abc", {"a": 1}])
def test_perform_many_refuses_a_single_value_as_items(
    env: Env, app_ctx: None, items: t.Any
) -> None:
    @env.queue.task(name="t")
    def task(data: object) -> None:
        pass

    with pytest.raises(InvalidArgument, match="items"):
        env.queue.perform_many(task, items)
    assert env.queue.count() == 0


def test_perform_many_returns_each_items_id_in_order(env: Env, app_ctx: None) -> None:
    """Each id ``perform_many`` returns is the task of the item at its place,
    whether it commits on its own (PostgreSQL: one unnested INSERT in
    autocommit) or joins the session's transaction, and for any priorities
    and delays: rows go in by their item's place, not by how they sort."""
    queue = env.queue

    @queue.task(name="store_only")
    def store_only(data: t.Any) -> None: ...

    stored = 0

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        items=st.lists(JSONISH, min_size=2, max_size=40),
        commit=st.booleans(),
        priority=st.none() | st.integers(-5, 5),
        delay=st.none() | st.floats(0, 1e6),
    )
    def check(
        items: list[t.Any], commit: bool, priority: int | None, delay: float | None
    ) -> None:
        nonlocal stored
        try:
            ids = queue.perform_many(
                store_only, items, commit=commit, priority=priority, delay=delay
            )
        except TaskDataError:
            env.db.session.rollback()
            return
        if not commit:
            env.db.session.commit()
        assert len(ids) == len(items) == len(set(ids))
        for task_id, item in zip(ids, items, strict=True):
            info = queue.get(task_id)
            assert info is not None
            assert info.data is not None
            # Encoded as perform does: compare the decoded value, NaN-safe.
            assert json.loads(info.data) == json.loads(json.dumps(item)) or item != item
        stored += 1

    check()
    assert stored, "no generated input was valid: the strategy is wrong"
