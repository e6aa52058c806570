"""Helpers for the tests that run the queue in real processes: free ports,
condition waits, and subprocesses that are always cleaned up."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import typing as t
import urllib.error
import urllib.request
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result

from flask_plainqueue import TaskInfo
from flask_plainqueue.claims import ClaimRequest

if t.TYPE_CHECKING:
    from conftest import Env

    from flask_plainqueue import PlainQueue

#: The folder holding the small apps the subprocess tests load.
APPS = Path(__file__).parent / "apps"

#: Long enough for a loaded 2-core machine; a passing run never waits this long.
TIMEOUT = 60.0

T = t.TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], T | None | t.Literal[False]],
    timeout: float = TIMEOUT,
    *,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Call ``predicate`` until it returns something truthy and return that.

    :param timeout: give up after this many seconds and fail the test.
    :param message: what was waited for (or a callable producing it, e.g. a
        process's output), shown when the wait fails.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {text}")
        time.sleep(interval)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this one without ``FLASK_*``,
    ``PLAINQUEUE_*`` and the reloader's marker, with ``tests/apps`` importable,
    plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLASK_", "PLAINQUEUE_", "PROCAPP_"))
        and k != "WERKZEUG_RUN_MAIN"
    }
    path = [str(APPS), str(APPS.parent.parent)]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def flask_args(app: str, *args: str) -> list[str]:
    """``python -m flask --app APP ARGS...`` with this interpreter."""
    return [sys.executable, "-m", "flask", "--app", app, *args]


class Proc:
    """A child process in its own process group, with its output in files."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        out: Path,
        err: Path,
        copiers: Sequence[threading.Thread] = (),
    ) -> None:
        self.popen = popen
        self.out_path = out
        self.err_path = err
        # Threads copying a piped child's output into the files.
        self._copiers = copiers

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def output(self) -> str:
        """Both streams, for failure messages."""
        return f"--- stdout ---\n{self.stdout()}\n--- stderr ---\n{self.stderr()}"

    def signal(self, signum: int, *, group: bool = False) -> None:
        """Send ``signum`` to the process (or its whole group, as a terminal's
        Ctrl-C does)."""
        if self.popen.poll() is not None:
            return
        if group:
            os.killpg(self.popen.pid, signum)
        else:
            self.popen.send_signal(signum)

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for the exit and return the return code; fail on a timeout."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"process {self.popen.args!r} did not exit:\n{self.output()}")
        self._join_copiers()
        return code

    def kill(self) -> None:
        """SIGKILL the process group (children too) and reap the process."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable
            pass
        self._join_copiers()

    def _join_copiers(self) -> None:
        # Its output is all in the files once the process has exited.
        for copier in self._copiers:
            copier.join(10)


def _copy(source: t.IO[bytes], path: Path) -> None:
    with source, path.open("ab", buffering=0) as target:
        while chunk := os.read(source.fileno(), 65536):
            target.write(chunk)


class Procs:
    """Starts child processes for one test and kills whatever is left of them,
    even when the test fails."""

    def __init__(self, tmp_path: Path) -> None:
        self._dir = tmp_path / "procs"
        self._dir.mkdir(exist_ok=True)
        self._procs: list[Proc] = []

    def start(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdin: int | None = subprocess.DEVNULL,
        piped: bool = False,
    ) -> Proc:
        """Start ``args`` in a new session (so its process group can be killed
        at once), writing stdout and stderr to files.

        :param piped: the child writes to pipes, which threads of this process
            copy into the files: a limit on the size of the files the child
            writes (``RLIMIT_FSIZE``, a full disk of its own) leaves its
            output alone.
        """
        n = len(self._procs)
        out = self._dir / f"{n}.out"
        err = self._dir / f"{n}.err"
        with out.open("wb") as out_file, err.open("wb") as err_file:
            popen = subprocess.Popen(
                list(args),
                env=dict(env) if env is not None else child_env(),
                cwd=cwd,
                stdin=stdin,
                stdout=subprocess.PIPE if piped else out_file,
                stderr=subprocess.PIPE if piped else err_file,
                start_new_session=True,
            )
        copiers = []
        if piped:
            for source, path in ((popen.stdout, out), (popen.stderr, err)):
                assert source is not None
                copier = threading.Thread(
                    target=_copy, args=(source, path), daemon=True
                )
                copier.start()
                copiers.append(copier)
        proc = Proc(popen, out, err, copiers)
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._procs:
            proc.kill()
            if proc.popen.stdin is not None:
                proc.popen.stdin.close()


def procs_fixture(tmp_path: Path) -> Iterator[Procs]:
    """The body of each module's ``procs`` fixture: subprocesses that are killed
    (with their children) after the test, whether it passed or not."""
    manager = Procs(tmp_path)
    try:
        yield manager
    finally:
        manager.close()


def http(
    method: str, url: str, data: object = None, *, timeout: float = 10.0
) -> tuple[int, t.Any]:
    """Send a JSON request; return the status and the decoded JSON body."""
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(errors="replace")


def http_ready(url: str) -> bool:
    """Whether a GET of ``url`` answers 200 (False while the server starts)."""
    try:
        status, _ = http("GET", url, timeout=2.0)
    except (OSError, ValueError):
        return False
    return status == 200


class ProcApp:
    """``tests/apps/procapp.py`` on a SQLite file under ``tmp_path``: the
    environment for children that load it, an in-process app on the same file
    (tables created) for enqueueing and inspecting, and readers for what the
    children recorded."""

    def __init__(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, tables: bool = True
    ) -> None:
        monkeypatch.syspath_prepend(str(APPS))
        import procapp

        self.module = procapp
        self.db_path = tmp_path / "queue.db"
        self.uri = f"sqlite:///{self.db_path}"
        self.workers_file = tmp_path / "workers.txt"
        self.instance_path = tmp_path / "instance"
        self.app = procapp.create_app(
            SQLALCHEMY_DATABASE_URI=self.uri, PLAINQUEUE_EMBEDDED_WORKER=False
        )
        if tables:
            self.create_tables()

    def create_tables(self) -> None:
        with self.app.app_context():
            self.module.db.create_all()

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for a child process that loads ``procapp``."""
        return child_env(
            PROCAPP_DATABASE_URI=self.uri,
            PROCAPP_WORKERS_FILE=str(self.workers_file),
            PROCAPP_INSTANCE_PATH=str(self.instance_path),
            PROCAPP_LOG="1",
            **extra,
        )

    def perform(self, task: str, data: t.Any = None) -> int:
        """Enqueue from this process (another writer on the same file); return
        the task's id."""
        with self.app.app_context():
            return self.module.queue.perform(task, data)

    def workers(self) -> list[tuple[int, str, str]]:
        """``(pid, thread name, worker id)`` of every worker started so far."""
        if not self.workers_file.exists():
            return []
        lines = self.workers_file.read_text().splitlines()
        return [(int(p), n, w) for p, n, w in (line.split(" ") for line in lines)]

    def runs(self) -> list[tuple[str, int]]:
        """``(key, pid)`` of every task run recorded so far."""
        return self.module.read_runs(self.db_path)

    def tasks(self) -> list[dict[str, t.Any]]:
        """The queue table's rows, as dicts."""
        import sqlite3

        conn = sqlite3.connect(str(self.db_path), timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute("SELECT * FROM plainqueue_tasks ORDER BY id").fetchall()
            return [dict(row) for row in rows]
        finally:
            conn.close()

    def close(self) -> None:
        with self.app.app_context():
            self.module.db.session.remove()
            self.module.db.engine.dispose()


def proc_app_fixture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ProcApp]:
    """The body of each module's ``proc_app`` fixture."""
    proc_app = ProcApp(tmp_path, monkeypatch)
    try:
        yield proc_app
    finally:
        proc_app.close()


def run_threads(
    target: Callable[[int], None], count: int, timeout: float = 120.0
) -> None:
    """Run ``target(n)`` for ``n`` in ``range(count)`` on as many threads,
    released together; raise the first exception any of them raised."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait()
            target(n)
        except BaseException as exc:  # pragma: no cover - raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread did not end"
    if errors:
        raise errors[0]


#: The lease owner ``Ops.claim`` claims as.
OWNER = "host:1:abc"


class Ops(t.NamedTuple):
    """An app with a queue, and the ways the CLI tests drive and inspect it."""

    env: Env
    queue: PlainQueue

    def cli(self, *args: str, input: str | None = None, color: bool = False) -> Result:
        return self.env.app.test_cli_runner().invoke(
            args=["queue", *args], input=input, color=color
        )

    def fail_dead(self, data: t.Any = None, *, name: str = "t.fail") -> int:
        """Perform a task that fails for good, run it, and return its id."""
        task_id = self.queue.perform(name, data)
        self.queue.drain()
        return task_id

    def info(self, task_id: int) -> TaskInfo:
        info = self.queue.get(task_id)
        assert info is not None, task_id
        return info

    def row(self, task_id: int) -> t.Any:
        """The stored row, as the database has it (or ``None``)."""
        table = self.queue.Task.__table__
        with self.env.db.engine.connect() as conn:
            return conn.execute(sa.select(table).where(table.c.id == task_id)).first()

    def set_row(self, task_id: int, **values: t.Any) -> None:
        table = self.queue.Task.__table__
        with self.env.db.engine.begin() as conn:
            conn.execute(sa.update(table).where(table.c.id == task_id).values(**values))

    def claim(self, name: str, owner: str = OWNER) -> list[int]:
        """Claim due tasks of ``name`` as a worker would (they are running, with
        a lease of 300 s)."""
        store = self.queue.store()
        now = store.clock()
        claimed = store.claim(
            ClaimRequest(
                owner=owner,
                names=[name],
                batch_sizes={name: 100},
                now=now,
                until=now + datetime.timedelta(seconds=300),
            )
        )
        return [c.id for c in claimed]

    def ids(self) -> set[int]:
        """The ids of every stored task."""
        table = self.queue.Task.__table__
        with self.env.db.engine.connect() as conn:
            return set(conn.execute(sa.select(table.c.id)).scalars())

    def travel(self, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
        """Make the queue's clock run ``seconds`` ahead from now on."""
        store = self.queue.store()
        clock = store.clock
        monkeypatch.setattr(
            store, "clock", lambda: clock() + datetime.timedelta(seconds=seconds)
        )


@contextlib.contextmanager
def worker_thread(queue: t.Any, worker: t.Any) -> Iterator[None]:
    """``worker.run()`` on a thread for the ``with`` block; then stopped
    (5 s of grace), joined and forgotten, and checked to have ended."""
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield
    finally:
        worker.stop(grace=5)
        thread.join(60)
        queue.forget_worker(worker)
    assert not thread.is_alive()


def refusing_trigger(
    session: t.Any,
    table: str,
    event: str,
    *,
    when: str = "TRUE",
    message: str = "refused",
) -> Callable[[], None]:
    """A trigger that makes the database refuse ``event`` (``INSERT``,
    ``DELETE``...) on the rows of ``table`` for which ``when`` holds (an SQL
    condition on ``OLD``/``NEW``), raising ``message``; returns what drops it.
    On SQLite and PostgreSQL."""
    if session.get_bind().dialect.name == "sqlite":
        creates = [
            f"CREATE TRIGGER refuse BEFORE {event} ON {table} WHEN ({when})"
            f" BEGIN SELECT RAISE(ABORT, '{message}'); END"
        ]
        drops = ["DROP TRIGGER refuse"]
    else:
        creates = [
            "CREATE FUNCTION plainqueue_test_refuse() RETURNS trigger AS $$"
            f" BEGIN RAISE EXCEPTION '{message}'; END $$ LANGUAGE plpgsql",
            f"CREATE TRIGGER refuse BEFORE {event} ON {table} FOR EACH ROW"
            f" WHEN ({when}) EXECUTE FUNCTION plainqueue_test_refuse()",
        ]
        drops = [
            f"DROP TRIGGER refuse ON {table}",
            "DROP FUNCTION plainqueue_test_refuse()",
        ]
    for statement in creates:
        session.execute(sa.text(statement))
    session.commit()

    def drop() -> None:
        session.rollback()
        for statement in drops:
            session.execute(sa.text(statement))
        session.commit()

    return drop


def assert_failures_logged_once(err: str) -> None:
    """Every ERROR line in a worker's log ``err`` is the first failure of one
    kind (a claim, a heartbeat, a stats flush...: logged with its traceback,
    then once a minute at most), each kind once."""
    errors = [
        line.split(" ERROR ", 1)[1] for line in err.splitlines() if " ERROR " in line
    ]
    assert all(e.endswith(("; will retry", "; will try again")) for e in errors), err
    assert len(errors) == len(set(errors)), err
