"""Scheduling across real processes (``tests/apps/schedapp.py``): unique keys
raced by two enqueuing processes, one run per periodic tick across three
``flask queue work`` processes, and an atomic task killed mid-way."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import child_env
from helpers import flask_args
from helpers import Proc
from helpers import Procs
from helpers import procs_fixture
from helpers import wait_for


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    yield from procs_fixture(tmp_path)


def _env(uri: str, **extra: str) -> dict[str, str]:
    return child_env(SCHEDAPP_DATABASE_URI=uri, **extra)


def _create_tables(procs: Procs, env: dict[str, str]) -> None:
    """Import the app once in a child, which creates its tables."""
    proc = procs.start(
        [sys.executable, "-c", "from schedapp import create_app; create_app()"],
        env=env,
    )
    assert proc.wait(120) == 0, proc.output()


def _work(procs: Procs, env: dict[str, str]) -> Proc:
    return procs.start(flask_args("schedapp:create_app", "queue", "work"), env=env)


def _stop(workers: list[Proc]) -> None:
    """SIGTERM each worker and wait for a clean exit."""
    for proc in workers:
        proc.signal(signal.SIGTERM)
    for proc in workers:
        assert proc.wait() == 0, proc.output()


def test_unique_key_race_between_processes(procs: Procs, sqlite_uri: str) -> None:
    env = _env(sqlite_uri)
    script = (
        "from schedapp import create_app, queue, unique_job\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    for i in range(200):\n"
        "        queue.perform(unique_job, i, unique_key=f'k{i % 20}')\n"
    )
    # Create the tables once, before the race.
    _create_tables(procs, env)
    racers = [procs.start([sys.executable, "-c", script], env=env) for _ in range(2)]
    for proc in racers:
        assert proc.wait(300) == 0, proc.output()
    engine = sa.create_engine(sqlite_uri)
    with engine.connect() as conn:
        keys = (
            conn.execute(sa.text("SELECT unique_key FROM plainqueue_tasks ORDER BY id"))
            .scalars()
            .all()
        )
    engine.dispose()
    assert sorted(keys) == sorted(f"k{i}" for i in range(20))


@pytest.mark.slow
def test_periodic_runs_once_per_tick_across_three_processes(
    procs: Procs, sqlite_uri: str
) -> None:
    env = _env(sqlite_uri, PLAINQUEUE_POLL_INTERVAL="0.2")
    _create_tables(procs, env)
    engine = sa.create_engine(sqlite_uri)
    workers = [_work(procs, env) for _ in range(3)]
    try:
        # Wait until the schedule is registered, then count 6 seconds.
        def registered() -> bool:
            with engine.connect() as conn:
                return bool(
                    conn.execute(
                        sa.text("SELECT count(*) FROM plainqueue_tasks_periodic")
                    ).scalar()
                )

        wait_for(registered, message="the schedule to be registered")
        start = time.time()
        time.sleep(6)  # the schedule itself is the subject: 6 s of real ticks
        end = time.time()
        _stop(workers)
        with engine.connect() as conn:
            ats = (
                conn.execute(sa.text("SELECT at FROM ticks ORDER BY at"))
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    within = [a for a in ats if start <= a <= end]
    assert 5 <= len(within) <= 7, (ats, start, end)
    gaps = [b - a for a, b in zip(ats, ats[1:], strict=False)]
    # Two runs for one tick would be milliseconds apart.
    assert min(gaps) > 0.5, gaps
    for proc in workers:
        assert "database is locked" not in proc.stderr(), proc.output()


@pytest.mark.slow
def test_atomic_task_killed_mid_way_leaves_nothing_and_runs_again(
    procs: Procs, sqlite_uri: str, tmp_path: Path
) -> None:
    env = _env(sqlite_uri, PLAINQUEUE_LEASE_SECONDS="2")
    started = tmp_path / "started"
    marker = tmp_path / "never"
    enqueue = procs.start(
        [
            sys.executable,
            "-c",
            "from schedapp import create_app, queue, move_credit\n"
            "app = create_app()\n"
            "with app.app_context():\n"
            f"    queue.perform(move_credit, {{'started': {str(started)!r}, 'wait_for': {str(marker)!r}}})\n",
        ],
        env=env,
    )
    assert enqueue.wait(120) == 0, enqueue.output()
    first = _work(procs, env)
    wait_for(started.exists, message=first.output)
    first.kill()
    engine = sa.create_engine(sqlite_uri)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM credits")).scalar() == 0
        second = _work(procs, env)

        # The second run sees the started file, so it completes; it must wait for
        # the dead worker's lease to expire first.
        def done() -> bool:
            with engine.connect() as conn:
                count = conn.execute(
                    sa.text("SELECT count(*) FROM plainqueue_tasks")
                ).scalar()
                return count == 0

        wait_for(done, 120, message=second.output)
        _stop([second])
        with engine.connect() as conn:
            steps = (
                conn.execute(sa.text("SELECT step FROM credits ORDER BY id"))
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert steps == ["debit", "credit"]
