"""``flask queue work`` in real processes on one SQLite file: shutdown on
SIGTERM, hand-back after the grace period, a kill -9 and the lease, and many
workers racing for thousands of tasks."""

from __future__ import annotations

import datetime
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import flask_args
from helpers import Proc
from helpers import proc_app_fixture
from helpers import ProcApp
from helpers import Procs
from helpers import procs_fixture
from helpers import wait_for

UTC = datetime.timezone.utc


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    yield from procs_fixture(tmp_path)


@pytest.fixture
def proc_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcApp]:
    yield from proc_app_fixture(tmp_path, monkeypatch)


def start_worker(procs: Procs, proc_app: ProcApp, *args: str, **env: str) -> Proc:
    return procs.start(
        flask_args("procapp", "queue", "work", *args), env=proc_app.env(**env)
    )


def wait_until_started(proc_app: ProcApp, proc: Proc) -> str:
    """Wait until ``proc``'s worker has started; return its worker id."""

    def started() -> str | None:
        if proc.returncode is not None:
            pytest.fail(f"the worker exited with {proc.returncode}:\n{proc.output()}")
        ids = [w for pid, _, w in proc_app.workers() if pid == proc.pid]
        return ids[0] if ids else None

    return wait_for(started, message=lambda: f"the worker to start:\n{proc.output()}")


class Blocker:
    """A ``block`` task's files: it appends to ``started`` when it starts and
    finishes once ``release`` exists."""

    def __init__(self, tmp_path: Path, key: str) -> None:
        self.key = key
        self.started = tmp_path / f"{key}.started"
        self.release = tmp_path / f"{key}.release"

    @property
    def data(self) -> dict[str, str]:
        return {
            "key": self.key,
            "started": str(self.started),
            "release": str(self.release),
        }

    def starts(self) -> list[tuple[int, float]]:
        """``(pid, time.time())`` of each start so far."""
        if not self.started.exists():
            return []
        lines = self.started.read_text().splitlines()
        return [(int(p), float(s)) for p, s in (line.split() for line in lines)]

    def wait_started(self, times: int, proc: Proc) -> list[tuple[int, float]]:
        return wait_for(
            lambda: len(self.starts()) >= times and self.starts(),
            message=lambda: f"{self.key} to start {times} time(s):\n{proc.output()}",
        )


def parse_time(value: str) -> datetime.datetime:
    # Stored as naive UTC text on SQLite.
    return datetime.datetime.fromisoformat(value).replace(tzinfo=UTC)


def assert_clean_exit(proc: Proc) -> None:
    assert proc.wait() == 0, proc.output()
    assert "database is locked" not in proc.stderr(), proc.output()
    assert "Traceback" not in proc.stderr(), proc.output()


# -- burst -------------------------------------------------------------------


def test_burst_exits_zero_when_nothing_is_due(procs: Procs, proc_app: ProcApp) -> None:
    with proc_app.app.app_context():
        proc_app.module.queue.perform("record", {"key": "later"}, delay=3600)
    proc = start_worker(procs, proc_app, "--burst")
    assert_clean_exit(proc)
    assert proc_app.runs() == []
    (task,) = proc_app.tasks()
    assert task["attempts"] == 0


def test_burst_runs_what_is_due_then_exits(procs: Procs, proc_app: ProcApp) -> None:
    for i in range(5):
        proc_app.perform("record", {"key": f"b{i}"})
    proc = start_worker(procs, proc_app, "--burst")
    assert_clean_exit(proc)
    assert sorted(k for k, _ in proc_app.runs()) == [f"b{i}" for i in range(5)]
    assert proc_app.tasks() == []


def test_worker_waits_for_a_missing_table(
    procs: Procs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc_app = ProcApp(tmp_path, monkeypatch, tables=False)
    try:
        # --burst: refuses at once, saying how to create the table.
        burst = start_worker(procs, proc_app, "--burst")
        assert burst.wait() == 1, burst.output()
        assert "does not exist" in burst.stderr(), burst.output()
        assert "db.create_all()" in burst.stderr(), burst.output()
        assert "Traceback" not in burst.stderr(), burst.output()

        # A running worker waits quietly, then runs tasks once the table exists.
        proc = start_worker(procs, proc_app)
        wait_until_started(proc_app, proc)
        proc_app.create_tables()
        proc_app.perform("record", {"key": "late"})
        wait_for(lambda: proc_app.runs(), message=proc.output)
        proc.signal(signal.SIGTERM)
        assert_clean_exit(proc)
        assert proc_app.runs() == [("late", proc.pid)]
    finally:
        proc_app.close()


# -- SIGTERM -----------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_lets_the_running_task_finish(
    procs: Procs, proc_app: ProcApp, tmp_path: Path, signum: int
) -> None:
    proc = start_worker(procs, proc_app)
    blocker = Blocker(tmp_path, "finish")
    proc_app.perform("block", blocker.data)
    blocker.wait_started(1, proc)
    proc.signal(signum)
    name = signal.Signals(signum).name
    wait_for(lambda: f"{name} received" in proc.stderr(), message=proc.output)
    # Stopping: a task enqueued now is left for another worker.
    proc_app.perform("record", {"key": "after-signal"})
    blocker.release.touch()
    assert_clean_exit(proc)
    assert proc_app.runs() == [("finish", proc.pid)]
    (task,) = proc_app.tasks()
    assert task["name"] == "record"
    assert task["attempts"] == 0


@pytest.mark.slow
def test_grace_over_hands_back_for_another_worker(
    procs: Procs, proc_app: ProcApp, tmp_path: Path
) -> None:
    first = start_worker(procs, proc_app, "--grace", "0.5")
    blocker = Blocker(tmp_path, "handed")
    proc_app.perform("block", blocker.data)
    blocker.wait_started(1, first)
    first.signal(signal.SIGTERM)
    assert_clean_exit(first)
    assert "handed back 1 of 1 unfinished task" in first.stderr(), first.output()

    (task,) = proc_app.tasks()
    assert task["lease_owner"] is None
    assert task["status"] == "queued"
    assert task["attempts"] == 1
    assert task["failed_nr"] == 0
    # Due at once, not at the end of the lease.
    assert parse_time(task["run_at"]) <= datetime.datetime.now(UTC)
    assert proc_app.runs() == []

    blocker.release.touch()
    second = start_worker(procs, proc_app, "--burst")
    assert_clean_exit(second)
    assert proc_app.runs() == [("handed", second.pid)]
    assert [pid for pid, _ in blocker.starts()] == [first.pid, second.pid]
    assert proc_app.tasks() == []


@pytest.mark.slow
def test_second_signal_hands_back_at_once(
    procs: Procs, proc_app: ProcApp, tmp_path: Path
) -> None:
    proc = start_worker(procs, proc_app)  # default grace: 30 s
    blocker = Blocker(tmp_path, "twice")
    proc_app.perform("block", blocker.data)
    blocker.wait_started(1, proc)
    proc.signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM received" in proc.stderr(), message=proc.output)
    proc.signal(signal.SIGTERM)
    assert_clean_exit(proc)
    (task,) = proc_app.tasks()
    assert task["lease_owner"] is None
    assert proc_app.runs() == []


# -- kill -9 and the lease ---------------------------------------------------


@pytest.mark.slow
def test_killed_worker_task_runs_again_after_the_lease(
    procs: Procs, proc_app: ProcApp, tmp_path: Path
) -> None:
    lease = {"PLAINQUEUE_LEASE_SECONDS": "2"}
    first = start_worker(procs, proc_app, **lease)
    first_id = wait_until_started(proc_app, first)
    blocker = Blocker(tmp_path, "killed")
    proc_app.perform("block", blocker.data)
    blocker.wait_started(1, first)
    first.kill()

    (task,) = proc_app.tasks()
    assert task["lease_owner"] == first_id
    lease_end = parse_time(task["run_at"])

    second = start_worker(procs, proc_app, **lease)
    second_id = wait_until_started(proc_app, second)
    starts = blocker.wait_started(2, second)
    assert starts[1][0] == second.pid
    # Not taken over while the dead worker's lease held.
    assert starts[1][1] >= lease_end.timestamp() - 0.05
    (task,) = proc_app.tasks()
    assert task["lease_owner"] == second_id
    assert task["attempts"] == 2

    blocker.release.touch()
    wait_for(lambda: proc_app.runs(), message=second.output)
    assert proc_app.runs() == [("killed", second.pid)]
    wait_for(lambda: proc_app.tasks() == [], message=second.output)
    second.signal(signal.SIGTERM)
    assert_clean_exit(second)


# -- many processes on one file ------------------------------------------------


@pytest.mark.slow
def test_four_workers_and_an_enqueuer_run_every_task_once(
    procs: Procs, proc_app: ProcApp
) -> None:
    count = 2000
    workers = [start_worker(procs, proc_app) for _ in range(4)]
    for worker in workers:
        wait_until_started(proc_app, worker)
    # One process enqueues while the workers run, one task per transaction,
    # alternating "record" (claimed one at a time) and "record_batch" (claimed up
    # to 20 at a time and run concurrently).
    args = ["--count", str(count), "--task", "record", "--task", "record_batch"]
    enqueuer = procs.start(flask_args("procapp", "enqueue", *args), env=proc_app.env())
    expected = {f"k{i}" for i in range(count)}

    def all_ran() -> bool:
        for proc in (*workers, enqueuer):
            if proc.returncode not in (None, 0):
                pytest.fail(f"a process failed:\n{proc.output()}")
        return len(proc_app.runs()) >= len(expected) and not proc_app.tasks()

    wait_for(all_ran, timeout=300, interval=0.5, message=lambda: _progress(proc_app))
    assert_clean_exit(enqueuer)
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert_clean_exit(worker)

    runs = proc_app.runs()
    keys = [key for key, _ in runs]
    assert len(keys) == len(set(keys)), "a task ran twice"
    assert set(keys) == expected
    assert {pid for _, pid in runs} <= {w.pid for w in workers}
    assert proc_app.tasks() == []


def _progress(proc_app: ProcApp) -> str:
    return f"every task to run: {len(proc_app.runs())} runs, {len(proc_app.tasks())} waiting"


def test_workers_on_a_fresh_file_do_not_race_on_startup(
    procs: Procs, proc_app: ProcApp
) -> None:
    """Several workers starting at once on one file (WAL switch, first claims)."""
    procs_started = [start_worker(procs, proc_app, "--burst") for _ in range(3)]
    for proc in procs_started:
        assert_clean_exit(proc)
