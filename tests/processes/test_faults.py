"""Fault tests in a real ``flask queue work`` process (the trust issue): tasks,
callbacks and receivers that raise each kind of ``BaseException``, a task that
blocks past its timeout and the grace period, a 1 MB error message, a task
that ends its process, and a full disk (SQLite). Afterwards the worker is
alive (or, for the process that was ended, a new one takes over), each row is
in its documented state, and ordinary tasks enqueued after the bad ones ran.
On SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime
import importlib
import os
import resource
import signal
import sqlite3
import sys
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import APPS
from helpers import assert_failures_logged_once
from helpers import child_env
from helpers import flask_args
from helpers import Procs
from helpers import procs_fixture
from helpers import wait_for

from flask_plainqueue import TaskState
from flask_plainqueue.runner import MAX_ERROR_LENGTH
from flask_plainqueue.scheduler import STATS_FLUSH_INTERVAL
from flask_plainqueue.sqlite import utc_text

pytestmark = pytest.mark.slow


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    yield from procs_fixture(tmp_path)


@pytest.fixture
def faultapp(
    database_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[t.Any]:
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("FAULTAPP_DATABASE_URI", database_uri)
    monkeypatch.setenv("FAULTAPP_DIR", str(marks))
    monkeypatch.syspath_prepend(str(APPS))
    module: t.Any = importlib.import_module("faultapp")
    app = module.create_app()
    module.marks = marks
    module.app = app
    module.child_env = child_env(
        FAULTAPP_DATABASE_URI=database_uri,
        FAULTAPP_DIR=str(marks),
        PLAINQUEUE_LEASE_SECONDS="3",
        PLAINQUEUE_SHUTDOWN_GRACE="1",
    )
    yield module
    with app.app_context():
        module.db.session.remove()
        module.db.drop_all()
        module.db.engine.dispose()


def _work(procs: Procs, faultapp: t.Any, *args: str) -> t.Any:
    return procs.start(
        flask_args("faultapp:create_app()", "queue", "work", *args),
        env=faultapp.child_env,
    )


BAD = [
    "body_system_exit",
    "body_keyboard_interrupt",
    "body_generator_exit",
    "success_system_exit",
    "failure_keyboard_interrupt",
    "receiver_system_exit",
    "past_timeout",
    "huge_error",
]


def test_misbehaving_tasks_leave_the_worker_alive_and_rows_settled(
    procs: Procs, faultapp: t.Any
) -> None:
    queue, app = faultapp.queue, faultapp.app
    with app.app_context():
        ids = {name: queue.perform(name) for name in BAD}
        for n in range(3):
            queue.perform("ordinary", f"after-{n}", priority=-1)
    worker = _work(procs, faultapp, "--concurrency", "2")
    wait_for(
        lambda: all((faultapp.marks / f"ran-after-{n}").exists() for n in range(3)),
        message=worker.output,
    )

    def settled() -> bool:
        with app.app_context():
            return all(
                (info := queue.get(task_id)) is None
                or info.state is not TaskState.RUNNING
                for task_id in ids.values()
            )

    wait_for(settled, message=worker.output)
    assert worker.returncode is None, worker.output()
    with app.app_context():
        # The body succeeded: the task is done whatever its callback or a
        # task_started receiver raised.
        assert queue.get(ids["success_system_exit"]) is None
        assert queue.get(ids["receiver_system_exit"]) is None
        for name in (
            "body_system_exit",
            "body_keyboard_interrupt",
            "body_generator_exit",
            "failure_keyboard_interrupt",
            "past_timeout",
            "huge_error",
        ):
            info = queue.get(ids[name])
            assert info is not None, name
            # One failed attempt, retried later: never leased, never dead.
            assert info.state is TaskState.SCHEDULED, (name, info.state)
            assert info.failed_nr == 1, name
            assert info.lease_owner is None, name
        timed_out = queue.get(ids["past_timeout"])
        assert timed_out is not None and "TimeoutError" in (timed_out.error or "")
        huge = queue.get(ids["huge_error"])
        assert huge is not None and huge.error is not None
        assert len(huge.error) <= MAX_ERROR_LENGTH
        assert "RuntimeError" in huge.error
        queue.perform("ordinary", "late")
    wait_for(lambda: (faultapp.marks / "ran-late").exists(), message=worker.output)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
    assert "Traceback" not in worker.stdout()


def test_task_that_ends_its_process_runs_again_in_the_next_worker(
    procs: Procs, faultapp: t.Any
) -> None:
    queue, app = faultapp.queue, faultapp.app
    with app.app_context():
        task_id = queue.perform("exit_process_once")
        queue.perform("ordinary", "after", priority=-1)
    first = _work(procs, faultapp)
    assert first.wait() == 17, first.output()
    with app.app_context():
        info = queue.get(task_id)
        # Its worker is gone: the row stays leased until the lease expires.
        assert info is not None and info.state is TaskState.RUNNING
    second = _work(procs, faultapp)
    wait_for(lambda: (faultapp.marks / "ran-after").exists(), message=second.output)

    def done() -> bool:
        with app.app_context():
            return queue.get(task_id) is None

    wait_for(done, message=second.output)
    second.signal(signal.SIGTERM)
    assert second.wait() == 0, second.output()
    assert sys.platform  # the second run needed no help


def _slow_batch_running(procs: Procs, faultapp: t.Any) -> tuple[t.Any, list[int]]:
    """A worker running a batch of three ``slow_batch`` tasks, with a grace
    period and a lease long enough that only a second signal ends them."""
    queue, app = faultapp.queue, faultapp.app
    faultapp.child_env["PLAINQUEUE_SHUTDOWN_GRACE"] = "600"
    faultapp.child_env["PLAINQUEUE_LEASE_SECONDS"] = "600"
    with app.app_context():
        ids = [queue.perform("slow_batch") for _ in range(3)]
    worker = _work(procs, faultapp)

    def running() -> bool:
        with app.app_context():
            return bool(queue.count(state=TaskState.RUNNING) == 3)

    wait_for(running, message=worker.output)
    worker.signal(signal.SIGTERM)
    # Two signals sent back to back reach Python's handler as one.
    wait_for(lambda: "SIGTERM received" in worker.stderr(), message=worker.output)
    return worker, ids


def _assert_handed_back(faultapp: t.Any, ids: list[int], output: str) -> None:
    """Due now, unleased and not counted as failures."""
    queue, app = faultapp.queue, faultapp.app
    with app.app_context():
        for task_id in ids:
            info = queue.get(task_id)
            assert info is not None
            assert info.state is TaskState.PENDING, output
            assert info.lease_owner is None
            assert info.failed_nr == 0


def test_second_sigterm_hands_back_a_running_batch(
    procs: Procs, faultapp: t.Any
) -> None:
    """Item 16: a second SIGTERM replaces the first one's deadline (the grace
    period) with an earlier one: the batch's rows are handed back, due now and
    not counted as failures, and the process exits."""
    worker, ids = _slow_batch_running(procs, faultapp)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
    assert "handing back" in worker.stderr()
    _assert_handed_back(faultapp, ids, worker.output())


def test_a_storm_of_sigterms_during_shutdown_still_ends_the_worker(
    procs: Procs, faultapp: t.Any
) -> None:
    """SIGTERM after SIGTERM while the worker shuts down: each can land while
    the main thread holds one of the locks that stopping takes (a handler that
    called ``stop`` there could hang the process for good). The worker exits
    0 and the running batch is handed back, not failed."""
    worker, ids = _slow_batch_running(procs, faultapp)
    for _ in range(300):
        worker.signal(signal.SIGTERM)  # a no-op once the process has exited
    assert worker.wait() == 0, worker.output()
    _assert_handed_back(faultapp, ids, worker.output())


def test_a_killed_workers_task_runs_again_before_its_lease_ends(
    procs: Procs, faultapp: t.Any
) -> None:
    """Operations issue, item 1: kill -9 a worker holding a 60 s lease, with a
    2 s heartbeat and a 6 s timeout; another worker finds it lost and runs its
    task again long before the lease would have ended."""
    queue, app = faultapp.queue, faultapp.app
    faultapp.child_env.update(
        PLAINQUEUE_LEASE_SECONDS="60",
        PLAINQUEUE_HEARTBEAT="2",
        PLAINQUEUE_WORKER_TIMEOUT="6",
    )
    workers = [_work(procs, faultapp) for _ in range(2)]
    with app.app_context():
        wait_for(lambda: len(queue.workers()) == 2, message=workers[0].output)
        task_id = queue.perform("held_then_lost")
    held = faultapp.marks / "held"
    wait_for(held.exists, message=lambda: workers[0].output() + workers[1].output())
    (victim,) = [w for w in workers if str(w.pid) == held.read_text()]
    (survivor,) = [w for w in workers if w is not victim]
    with app.app_context():
        info = queue.get(task_id)
        assert info is not None and info.state is TaskState.RUNNING
        lease_end = info.run_at
    victim.kill()
    done = faultapp.marks / "ran-held_then_lost"
    wait_for(done.exists, timeout=45, message=survivor.output)
    assert done.read_text() == str(survivor.pid)
    with app.app_context():
        now = queue.store().clock()
        assert now < lease_end, "it ran only when the lease ended"
        ages = {w.pid: w.heartbeat_age for w in queue.workers()}
    # This process reads with the default timeout (60 s): compare the ages.
    assert ages[victim.pid] > 6 > ages[survivor.pid]
    assert "are lost" in survivor.stderr()
    survivor.signal(signal.SIGTERM)
    assert survivor.wait() == 0, survivor.output()
    with app.app_context():
        assert [w.pid for w in queue.workers()] == [victim.pid]


@pytest.mark.postgresql
def test_worker_with_a_fast_clock_uses_the_database_clock(
    procs: Procs, faultapp: t.Any
) -> None:
    """Item 18: a worker whose host clock runs 10 minutes fast (libfaketime)
    neither runs a delayed task early nor takes a task another worker leased;
    on PostgreSQL due times and leases are compared with the database's clock."""
    libraries = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    if not libraries:
        pytest.skip("Debian's faketime (libfaketime) is not installed")
    queue, app = faultapp.queue, faultapp.app
    if not str(faultapp.child_env["FAULTAPP_DATABASE_URI"]).startswith("postgresql"):
        pytest.skip("SQLite has no clock but the host's")
    table = queue.Task.__table__
    with app.app_context():
        delayed = queue.perform("ordinary", "delayed", delay=300)
        leased = queue.perform("ordinary", "leased")
        with faultapp.db.engine.begin() as conn:
            conn.execute(
                sa.update(table)
                .where(table.c.id == leased)
                .values(
                    lease_owner="another:1:worker",
                    attempts=1,
                    run_at=sa.func.now() + datetime.timedelta(seconds=120),
                )
            )
        queue.perform("ordinary", "now")
    # Preloaded into the worker itself (not under the faketime wrapper), so
    # the test's SIGTERM reaches the worker.
    env = {
        **faultapp.child_env,
        "LD_PRELOAD": str(libraries[0]),
        "FAKETIME": "+600s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    worker = procs.start(flask_args("faultapp:create_app()", "queue", "work"), env=env)
    wait_for(lambda: (faultapp.marks / "ran-now").exists(), message=worker.output)
    first_line = worker.stderr().splitlines()[0]
    logged = datetime.datetime.strptime(first_line[:19], "%Y-%m-%d %H:%M:%S")
    # The fake clock is in effect (the log's local time is UTC here).
    assert logged > datetime.datetime.now() + datetime.timedelta(seconds=500)
    with app.app_context():
        # A later task runs, so the worker has claimed again since.
        queue.perform("ordinary", "later")
    wait_for(lambda: (faultapp.marks / "ran-later").exists(), message=worker.output)
    assert not (faultapp.marks / "ran-delayed").exists()
    assert not (faultapp.marks / "ran-leased").exists()
    with app.app_context():
        info = queue.get(leased)
        assert info is not None and info.lease_owner == "another:1:worker"
        info = queue.get(delayed)
        assert info is not None and info.state is TaskState.SCHEDULED
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()


def test_a_killed_worker_loses_at_most_its_last_flush_interval_of_counts(
    procs: Procs, faultapp: t.Any
) -> None:
    """History: a running worker writes its counts from its scheduler thread
    within STATS_FLUSH_INTERVAL, without stopping; kill -9 keeps what it
    wrote, and loses at most what it counted since (never counts twice)."""
    queue, app = faultapp.queue, faultapp.app
    worker = _work(procs, faultapp)
    with app.app_context():
        for n in range(5):
            queue.perform("ordinary", f"first-{n}")
        wait_for(lambda: queue.count(name="ordinary") == 0, message=worker.output)
        wait_for(
            lambda: queue.stats(name="ordinary").total.succeeded == 5,
            timeout=STATS_FLUSH_INTERVAL + 30,
            message=worker.output,
        )
        # Written by the flush, not by a stop: the worker still runs.
        assert worker.returncode is None
        for n in range(3):
            queue.perform("ordinary", f"second-{n}")
        wait_for(lambda: queue.count(name="ordinary") == 0, message=worker.output)
        worker.kill()
        after_kill = queue.stats(name="ordinary").total.succeeded
    assert 5 <= after_kill <= 8, after_kill


def _file_size_limit(pid: int, limit: int) -> None:
    """Let process ``pid`` write no byte at or past offset ``limit`` of any
    file: its own full disk (the soft ``RLIMIT_FSIZE``; the hard one stays, so
    the limit can be lifted again). Python ignores ``SIGXFSZ``, so a write past
    the limit fails with ``EFBIG``: SQLite reports a write that starts past it
    as "disk I/O error" and one cut short by it as "database or disk is full".
    Pipes have no size: a child started with ``piped=True`` still logs."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def _cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid`` has used (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runs(faultapp: t.Any) -> dict[str, int]:
    """How many times ``record`` ran with each datum (a line per run)."""
    return {
        path.name.removeprefix("ran-"): len(path.read_text().splitlines())
        for path in faultapp.marks.glob("ran-*")
    }


def test_a_full_disk_stops_no_worker_and_runs_no_finished_task_again(
    procs: Procs, faultapp: t.Any, database_uri: str
) -> None:
    """A worker whose disk fills up (every write it makes fails: to the
    database, its WAL, a checkpoint) just as its two claim loops finish a
    batch each, for longer than a lease, while tasks are enqueued from
    elsewhere: it goes on without spinning, logs the failed claim once with
    its traceback (not once per retry) and its recovery once, and once the
    disk has room again it writes what had finished, runs every task exactly
    once (those finished before are not run again though their leases ended
    meanwhile, and are counted once in the stats), beats again, leaves no
    task leased, and exits 0 on SIGTERM; the database passes ``PRAGMA
    integrity_check``."""
    if not database_uri.startswith("sqlite"):
        pytest.skip("RLIMIT_FSIZE fills the disk of local files only (SQLite's)")
    queue, app = faultapp.queue, faultapp.app
    db_path = database_uri.removeprefix("sqlite:///")
    faultapp.child_env.update(PLAINQUEUE_HEARTBEAT="1", PLAINQUEUE_WORKER_TIMEOUT="30")
    worker = procs.start(
        flask_args("faultapp:create_app()", "queue", "work", "--concurrency", "2"),
        env=faultapp.child_env,
        piped=True,
    )
    with app.app_context():
        wait_for(queue.workers, message=worker.output)
        # In one transaction: each claim loop takes a batch of four, and four
        # tasks wait.
        queue.perform_many("record", [f"before-{n}" for n in range(12)])
    # Both batches have started, and wait for the gate.
    wait_for(lambda: len(_runs(faultapp)) == 8, message=worker.output)
    # Past a mark's line, short of the first page of the database or the WAL.
    _file_size_limit(worker.pid, 256)
    full_since, cpu_before = time.monotonic(), _cpu_seconds(worker.pid)
    (faultapp.marks / "gate").write_text("")
    with app.app_context():
        for n in range(6):
            queue.perform("record", f"during-{n}")

    def leased(*, expired: bool) -> int:
        now = utc_text(datetime.datetime.now(datetime.timezone.utc))
        conn = sqlite3.connect(db_path, timeout=30)
        try:
            (count,) = conn.execute(
                "SELECT count(*) FROM plainqueue_tasks WHERE lease_owner IS NOT NULL"
                f" AND run_at {'<=' if expired else '>'} ?",
                (now,),
            ).fetchone()
            return int(count)
        finally:
            conn.close()

    def missed_beats() -> float:
        with app.app_context():
            (row,) = queue.workers()
        return float(row.heartbeat_age)

    wait_for(
        lambda: "could not record its heartbeat" in worker.stderr(),
        message=worker.output,
    )
    # The eight finished tasks' leases (3 s) end while their outcomes wait.
    wait_for(lambda: leased(expired=False) == 0, message=worker.output)
    assert leased(expired=True) == 8, worker.output()
    # A few more rounds of failing claims (and 1 s heartbeats) after that.
    missed = missed_beats()
    wait_for(lambda: missed_beats() >= missed + 2, message=worker.output)
    assert worker.returncode is None, worker.output()
    cpu = _cpu_seconds(worker.pid) - cpu_before
    full_for = time.monotonic() - full_since
    lifted = datetime.datetime.now(datetime.timezone.utc)
    _file_size_limit(worker.pid, resource.RLIM_INFINITY)

    with app.app_context():
        wait_for(lambda: queue.count() == 0, message=worker.output)

        def beating() -> bool:
            (row,) = queue.workers()
            return bool(row.heartbeat > lifted)

        wait_for(beating, message=worker.output)
    expected = [f"before-{n}" for n in range(12)] + [f"during-{n}" for n in range(6)]
    assert _runs(faultapp) == dict.fromkeys(expected, 1), worker.output()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
    with app.app_context():
        # Written on the way out: each attempt counted once.
        assert queue.stats(name="record").total.succeeded == 18
    err = worker.stderr()
    assert "disk I/O error" in err or "database or disk is full" in err, err
    # Retried without spinning (idle, it uses about 1 % of a CPU).
    assert cpu < full_for / 4, (cpu, full_for)
    # A traceback for the first failed claim, heartbeat and stats flush, not
    # one per retry; and each recovery once.
    assert err.count("claiming failed; will retry") == 1, err
    assert err.count("claiming works again") == 1, err
    assert err.count("could not record its heartbeat") == 1, err
    assert err.count("recording its heartbeat works again") == 1, err
    assert_failures_logged_once(err)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
