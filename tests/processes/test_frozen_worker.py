"""A frozen worker: ``SIGSTOP`` then ``SIGCONT`` on a real ``flask queue work``
process, as a VM pause, a laptop's sleep or a long GC pause does to it. Frozen
past its lease while running a task, frozen while idle past the worker
timeout, and (SQLite) frozen while it holds the database's write lock. The
other worker takes over, the frozen one's late outcome is fenced, and both
go on and exit 0. On SQLite and PostgreSQL. The tasks are in
``tests/apps/frozenapp.py``.
"""

from __future__ import annotations

import importlib
import signal
import sqlite3
import threading
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import APPS
from helpers import assert_failures_logged_once
from helpers import child_env
from helpers import flask_args
from helpers import Proc
from helpers import Procs
from helpers import procs_fixture
from helpers import wait_for

from flask_plainqueue import TaskState

pytestmark = pytest.mark.slow

#: The settings of the workers and of this process's app: a short lease, and a
#: worker is lost after a few missed heartbeats.
SETTINGS = {
    "PLAINQUEUE_LEASE_SECONDS": 2.0,
    "PLAINQUEUE_HEARTBEAT": 0.5,
    "PLAINQUEUE_WORKER_TIMEOUT": 3.0,
    "PLAINQUEUE_SHUTDOWN_GRACE": 2.0,
}


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    yield from procs_fixture(tmp_path)


@pytest.fixture
def frozenapp(
    database_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[t.Any]:
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("FROZENAPP_DATABASE_URI", database_uri)
    monkeypatch.setenv("FROZENAPP_DIR", str(marks))
    monkeypatch.syspath_prepend(str(APPS))
    module: t.Any = importlib.import_module("frozenapp")
    app = module.create_app(**SETTINGS)
    module.marks = marks
    module.app = app
    module.sqlite = database_uri.startswith("sqlite")
    module.child_env = child_env(
        FROZENAPP_DATABASE_URI=database_uri,
        FROZENAPP_DIR=str(marks),
        **{key: str(value) for key, value in SETTINGS.items()},
    )
    yield module
    with app.app_context():
        module.db.session.remove()
        module.db.drop_all()
        module.db.engine.dispose()


def _work(procs: Procs, frozenapp: t.Any, *args: str) -> Proc:
    return procs.start(
        flask_args("frozenapp:create_app()", "queue", "work", *args),
        env=frozenapp.child_env,
    )


def _outputs(*workers: Proc) -> t.Callable[[], str]:
    return lambda: "\n".join(w.output() for w in workers)


def _started(frozenapp: t.Any, name: str, workers: list[Proc]) -> Proc:
    """The worker whose process started task ``name``'s first attempt."""
    started = frozenapp.marks / f"{name}-started"
    pid = wait_for(
        lambda: started.exists() and started.read_text(), message=_outputs(*workers)
    )
    (worker,) = [w for w in workers if str(w.pid) == pid]
    return worker


def _states(frozenapp: t.Any) -> dict[int, str]:
    with frozenapp.app.app_context():
        return {w.pid: w.state for w in frozenapp.queue.workers()}


def _freeze(frozenapp: t.Any, worker: Proc) -> None:
    """``SIGSTOP`` the worker outside any write transaction of its own.

    On SQLite a process frozen inside a write (a heartbeat, a stats flush)
    keeps the database's one write lock, and everyone else gets "database is
    locked": that case has its own test below. Here the test holds the lock
    itself while it sends the signal, so the worker is at most waiting for it.
    """
    if not frozenapp.sqlite:
        worker.signal(signal.SIGSTOP)
        return
    path = sa.engine.make_url(frozenapp.app.config["SQLALCHEMY_DATABASE_URI"])
    lock = sqlite3.connect(path.database or "", timeout=30, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        worker.signal(signal.SIGSTOP)
        lock.execute("ROLLBACK")
    finally:
        lock.close()


def _stop(*workers: Proc) -> None:
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait() == 0, worker.output()


@pytest.mark.parametrize(
    ("late", "at_once"),
    [
        ("succeed", True),
        ("fail", True),
        ("callback", True),
        ("succeed", False),
    ],
)
def test_a_worker_frozen_past_its_lease_is_fenced_and_goes_on(
    procs: Procs, frozenapp: t.Any, late: str, at_once: bool
) -> None:
    """Worker A is frozen mid-task past its lease; B runs the task again and
    settles it (kept, with B's result). Resumed, A's late outcome (a success,
    a failure, or a success callback's transaction) changes nothing of B's,
    and A logs a warning saying it was dropped, whether the task ends the
    moment A resumes (``at_once``: before, a late success or failure was
    dropped without a word) or runs on until A's watchdog finds the lease
    lost. A goes on claiming and exits 0."""
    queue, app, marks = frozenapp.queue, frozenapp.app, frozenapp.marks
    workers = [_work(procs, frozenapp, "--concurrency", "1") for _ in range(2)]
    output = _outputs(*workers)
    name = "held_callback" if late == "callback" else "held"
    with app.app_context():
        wait_for(lambda: len(queue.workers()) == 2, message=output)
        task_id = (
            queue.perform(name) if late == "callback" else queue.perform(name, late)
        )
    frozen = _started(frozenapp, name, workers)
    (other,) = [w for w in workers if w is not frozen]
    _freeze(frozenapp, frozen)

    def settled() -> t.Any:
        with app.app_context():
            info = queue.get(task_id)
        return info if info is not None and info.state is TaskState.SUCCEEDED else None

    done = wait_for(settled, message=output)
    assert done.attempts == 2 and done.failed_nr == 0
    assert done.result == other.pid
    assert frozenapp.runs(name) == [other.pid]
    # Seen as lost while it is frozen (it sends no heartbeat).
    wait_for(lambda: _states(frozenapp)[frozen.pid] == "lost", message=output)

    release = marks / f"{name}-release"
    if at_once:
        release.write_text("")
        frozen.signal(signal.SIGCONT)
    else:
        frozen.signal(signal.SIGCONT)
        # Its watchdog finds the lease gone while the task runs on.
        wait_for(lambda: "lost the lease" in frozen.stderr(), message=frozen.output)
        release.write_text("")
    wait_for(lambda: frozenapp.runs(name) == [other.pid, frozen.pid], message=output)
    # It says its outcome was dropped.
    warning = (
        "success transaction was rolled back"
        if late == "callback"
        else "no longer this worker's"
    )
    wait_for(lambda: warning in frozen.stderr(), message=frozen.output)
    # The frozen worker still claims: with the other one gone, it runs a new
    # task.
    _stop(other)
    with app.app_context():
        queue.perform("counted", "after")
    wait_for(lambda: frozenapp.runs("after") == [frozen.pid], message=frozen.output)
    with app.app_context():
        info = queue.get(task_id)
        assert info is not None
        # Exactly as B settled it: the late attempt neither deleted, failed
        # nor re-kept it.
        assert info.state is TaskState.SUCCEEDED
        assert (info.attempts, info.failed_nr) == (2, 0)
        assert info.result == other.pid
        assert info.error is None and info.lease_owner is None
        assert info.finished == done.finished
        notes = frozenapp.db.session.scalars(sa.select(frozenapp.Note.pid)).all()
        assert queue.count(state=TaskState.RUNNING) == 0
    # B's success callback committed with its settle; A's was rolled back.
    assert notes == ([other.pid] if late == "callback" else [])
    _stop(frozen)
    assert "Traceback" not in frozen.stderr(), frozen.output()
    assert "Traceback" not in other.stderr(), other.output()


def test_a_worker_frozen_while_idle_is_lost_then_comes_back(
    procs: Procs, frozenapp: t.Any
) -> None:
    """Worker A is frozen while idle, longer than the worker timeout: it is
    listed as lost and B runs what comes meanwhile. A's row is deleted, as the
    pruning of lost workers does an hour on. Resumed, A's next heartbeat
    registers it again and it claims tasks; every task runs exactly once."""
    queue, app = frozenapp.queue, frozenapp.app
    frozen, other = workers = [
        _work(procs, frozenapp, "--concurrency", "2") for _ in range(2)
    ]
    output = _outputs(*workers)
    wait_for(
        lambda: _states(frozenapp) == {w.pid: "running" for w in workers},
        message=output,
    )
    _freeze(frozenapp, frozen)
    wait_for(lambda: _states(frozenapp)[frozen.pid] == "lost", message=output)
    with app.app_context():
        for n in range(5):
            queue.perform("counted", f"during-{n}")
    for n in range(5):
        wait_for(lambda: frozenapp.runs(f"during-{n}") == [other.pid], message=output)  # noqa: B023
    with app.app_context():
        rows = queue.store().tables.workers
        with frozenapp.db.engine.begin() as conn:
            conn.execute(sa.delete(rows).where(rows.c.pid == frozen.pid))
    assert frozen.pid not in _states(frozenapp)

    frozen.signal(signal.SIGCONT)
    wait_for(lambda: _states(frozenapp).get(frozen.pid) == "running", message=output)
    keys = [f"after-{n}" for n in range(20)]
    with app.app_context():
        for key in keys:
            queue.perform("counted", key)
        wait_for(lambda: queue.count() == 0, message=output)
    for key in keys:
        assert len(frozenapp.runs(key)) == 1, key
    _stop(other)
    with app.app_context():
        queue.perform("counted", "last")
    wait_for(lambda: frozenapp.runs("last") == [frozen.pid], message=frozen.output)
    _stop(frozen)
    for n in range(5):
        assert frozenapp.runs(f"during-{n}") == [other.pid]
    for worker in workers:
        assert "Traceback" not in worker.stderr(), worker.output()


def test_a_sqlite_worker_frozen_holding_the_write_lock(
    procs: Procs, frozenapp: t.Any
) -> None:
    """SQLite: worker A is frozen inside an atomic task, which holds the
    database's write lock. Worker B finishes its own task meanwhile, cannot
    record it ("database is locked" after the busy timeout), logs that and
    retries without dying; a ``perform`` here fails with that error after the
    busy timeout instead of hanging. Resumed, A commits its task, B records
    its own, new tasks run, nothing is lost, and both exit 0."""
    if not frozenapp.sqlite:
        pytest.skip("only SQLite has a database-wide write lock")
    queue, app, marks = frozenapp.queue, frozenapp.app, frozenapp.marks
    frozenapp.child_env["PLAINQUEUE_SQLITE_BUSY_TIMEOUT"] = "1"
    # No lease ends during the freeze: B's finished task is recorded once the
    # lock is free, not taken and run again.
    frozenapp.child_env["PLAINQUEUE_LEASE_SECONDS"] = "60"
    impatient = frozenapp.create_app(**SETTINGS, PLAINQUEUE_SQLITE_BUSY_TIMEOUT=1.0)
    workers = [_work(procs, frozenapp, "--concurrency", "1") for _ in range(2)]
    output = _outputs(*workers)
    with app.app_context():
        wait_for(lambda: len(queue.workers()) == 2, message=output)
        gate = queue.perform("gate")
    other = _started(frozenapp, "gate", workers)
    (frozen,) = [w for w in workers if w is not other]
    with app.app_context():
        atomic = queue.perform("atomic_hold")
    assert _started(frozenapp, "atomic_hold", workers) is frozen
    frozen.signal(signal.SIGSTOP)

    # B's task ends; writing that (and claiming) waits for the lock in vain.
    (marks / "gate-release").write_text("")
    wait_for(lambda: frozenapp.runs("gate") == [other.pid], message=output)
    wait_for(lambda: "claiming failed; will retry" in other.stderr(), message=output)
    refused: list[BaseException] = []

    def perform() -> None:
        with impatient.app_context():
            try:
                queue.perform("counted", "refused")
            except BaseException as exc:
                refused.append(exc)

    thread = threading.Thread(target=perform)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "perform() hung on the locked database"
    assert len(refused) == 1 and isinstance(refused[0], sa.exc.OperationalError)
    assert "database is locked" in str(refused[0])
    with app.app_context():
        info = queue.get(gate)
        # Not recorded yet: still leased to B.
        assert info is not None and info.lease_owner is not None
    assert other.returncode is None, other.output()

    frozen.signal(signal.SIGCONT)
    (marks / "atomic_hold-release").write_text("")
    wait_for(lambda: frozenapp.runs("atomic_hold") == [frozen.pid], message=output)
    with app.app_context():
        queue.perform("counted", "after")
    wait_for(lambda: len(frozenapp.runs("after")) == 1, message=output)
    with app.app_context():
        wait_for(lambda: queue.count() == 0, message=output)
        assert queue.get(gate) is None and queue.get(atomic) is None
        notes = frozenapp.db.session.scalars(sa.select(frozenapp.Note.pid)).all()
    assert notes == [frozen.pid]
    wait_for(lambda: "claiming works again" in other.stderr(), message=output)
    _stop(*workers)
    assert frozenapp.runs("gate") == [other.pid]
    assert frozenapp.runs("atomic_hold") == [frozen.pid]
    assert frozenapp.runs("refused") == []
    # The first failed claim (and heartbeat) with its traceback; no flood.
    for worker in workers:
        assert_failures_logged_once(worker.stderr())
    with impatient.app_context():
        frozenapp.db.engine.dispose()
