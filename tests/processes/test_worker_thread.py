"""The embedded worker: it starts with ``flask run`` in the serving process only,
never for other commands or under ``app.testing``, runs tasks enqueued by
requests, and stops cleanly. ``start_worker``/``stop_worker`` in-process are
tested in ``tests/integration/test_start_worker.py``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import flask_args
from helpers import free_port
from helpers import http
from helpers import http_ready
from helpers import Proc
from helpers import proc_app_fixture
from helpers import ProcApp
from helpers import Procs
from helpers import procs_fixture
from helpers import wait_for


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    yield from procs_fixture(tmp_path)


@pytest.fixture
def proc_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcApp]:
    yield from proc_app_fixture(tmp_path, monkeypatch)


class Server(t.NamedTuple):
    proc: Proc
    url: str


def start_server(procs: Procs, proc_app: ProcApp, *run_args: str, **env: str) -> Server:
    """``flask run`` on a free port; returns once it answers."""
    port = free_port()
    args = flask_args("procapp", "run", "--port", str(port), *run_args)
    proc = procs.start(args, env=proc_app.env(**env))
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.returncode is not None:
            pytest.fail(f"flask run exited with {proc.returncode}:\n{proc.output()}")
        return http_ready(f"{url}/pid")

    wait_for(ready, message=lambda: f"flask run to answer:\n{proc.output()}")
    return Server(proc, url)


def perform_over_http(server: Server, key: str, task: str = "record") -> None:
    status, body = http(
        "POST", f"{server.url}/perform", {"task": task, "data": {"key": key}}
    )
    assert status == 200, body


def wait_for_run(server: Server, key: str) -> None:
    def ran() -> bool:
        status, keys = http("GET", f"{server.url}/runs")
        return status == 200 and key in keys

    wait_for(ran, message=lambda: f"task {key!r} to run:\n{server.proc.output()}")


def started_lines(proc: Proc) -> list[str]:
    return [
        line
        for line in proc.stderr().splitlines()
        if "flask_plainqueue" in line and " started: " in line
    ]


# -- (a) flask run --no-reload ---------------------------------------------


def test_flask_run_runs_tasks_enqueued_by_requests(
    procs: Procs, proc_app: ProcApp
) -> None:
    server = start_server(procs, proc_app, "--no-reload")
    perform_over_http(server, "a")
    wait_for_run(server, "a")
    # The embedded worker, in the one serving process, ran it.
    assert proc_app.runs() == [("a", server.proc.pid)]
    assert [(pid, name) for pid, name, _ in proc_app.workers()] == [
        (server.proc.pid, "plainqueue-worker")
    ]
    assert len(started_lines(server.proc)) == 1
    # The task commits its own writes before the worker deletes its row.
    wait_for(lambda: proc_app.tasks() == [], message=server.proc.output)


def test_flask_run_picks_up_tasks_enqueued_by_other_processes(
    procs: Procs, proc_app: ProcApp
) -> None:
    server = start_server(procs, proc_app, "--no-reload")
    proc_app.perform("record", {"key": "from-outside"})
    wait_for_run(server, "from-outside")


# -- (b) with the reloader -------------------------------------------------


# ``run --debug`` rather than FLASK_DEBUG or ``flask --debug run``: with click
# 8.4, Flask 3.1's ``run`` resets FLASK_DEBUG when its own flag is not given.
@pytest.mark.parametrize(
    "run_args", [("--reload",), ("--debug",)], ids=["reload", "debug"]
)
def test_reloader_starts_the_worker_in_the_serving_child_only(
    procs: Procs, proc_app: ProcApp, run_args: tuple[str, ...]
) -> None:
    server = start_server(procs, proc_app, *run_args)
    status, child_pid = http("GET", f"{server.url}/pid")
    assert status == 200
    # The reloader's parent watches files; the child serves.
    assert child_pid != server.proc.pid
    perform_over_http(server, "r")
    wait_for_run(server, "r")
    assert proc_app.runs() == [("r", child_pid)]
    assert [(pid, name) for pid, name, _ in proc_app.workers()] == [
        (child_pid, "plainqueue-worker")
    ]
    assert len(started_lines(server.proc)) == 1, server.proc.output()

    # The parent exits 0 on SIGTERM and takes the child with it.
    server.proc.signal(signal.SIGTERM)
    assert server.proc.wait() == 0, server.proc.output()
    wait_for(lambda: not _alive(child_pid), message="the serving child to exit")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # A zombie (state Z) has exited; it only waits to be reaped.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- (c) no worker for other commands --------------------------------------


def test_no_worker_in_flask_shell(procs: Procs, proc_app: ProcApp) -> None:
    proc = procs.start(
        flask_args("procapp", "shell"), env=proc_app.env(), stdin=subprocess.PIPE
    )
    assert proc.popen.stdin is not None
    proc.popen.stdin.write(
        b"import json, procapp\nprint('STATE', json.dumps(procapp.worker_state(app)))\n"
    )
    proc.popen.stdin.close()
    assert proc.wait() == 0, proc.output()
    state = _state_line(proc.stdout() + proc.stderr())
    assert state["embedded"] is False
    assert "plainqueue-worker" not in state["threads"]
    assert proc_app.workers() == []


def _state_line(output: str) -> dict[str, t.Any]:
    for line in output.splitlines():
        if "STATE " in line:
            return t.cast("dict[str, t.Any]", json.loads(line.split("STATE ", 1)[1]))
    pytest.fail(f"no state printed:\n{output}")


def test_no_worker_for_a_custom_command(procs: Procs, proc_app: ProcApp) -> None:
    proc = procs.start(flask_args("procapp", "worker-state"), env=proc_app.env())
    assert proc.wait() == 0, proc.output()
    state = json.loads(proc.stdout())
    assert state["embedded"] is False
    assert "plainqueue-worker" not in state["threads"]
    assert proc_app.workers() == []


def test_custom_command_enqueues_without_running(
    procs: Procs, proc_app: ProcApp
) -> None:
    proc = procs.start(
        flask_args("procapp", "enqueue", "--count", "3"), env=proc_app.env()
    )
    assert proc.wait() == 0, proc.output()
    assert len(proc_app.tasks()) == 3
    assert proc_app.runs() == []
    assert proc_app.workers() == []


def test_queue_work_burst_runs_its_own_worker_only(
    procs: Procs, proc_app: ProcApp
) -> None:
    proc_app.perform("record", {"key": "b"})
    proc = procs.start(
        flask_args("procapp", "queue", "work", "--burst"), env=proc_app.env()
    )
    assert proc.wait() == 0, proc.output()
    assert proc_app.runs() == [("b", proc.pid)]
    # One worker, in the command's main thread; no embedded worker thread.
    assert [(pid, name) for pid, name, _ in proc_app.workers()] == [
        (proc.pid, "MainThread")
    ]


def test_queue_work_has_no_embedded_worker(procs: Procs, proc_app: ProcApp) -> None:
    proc = procs.start(flask_args("procapp", "queue", "work"), env=proc_app.env())
    wait_for(proc_app.workers, message=lambda: f"the worker to start:\n{proc.output()}")
    for i in range(10):
        proc_app.perform("record", {"key": f"w{i}"})
    wait_for(lambda: len(proc_app.runs()) == 10, message=proc.output)
    assert {pid for _, pid in proc_app.runs()} == {proc.pid}
    assert [(pid, name) for pid, name, _ in proc_app.workers()] == [
        (proc.pid, "MainThread")
    ]
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.output()


# -- (d) testing and configuration -----------------------------------------


def test_no_embedded_worker_when_testing(procs: Procs, proc_app: ProcApp) -> None:
    server = start_server(procs, proc_app, "--no-reload", PROCAPP_TESTING="1")
    status, state = http("GET", f"{server.url}/state")
    assert status == 200
    assert state["embedded"] is False
    assert "plainqueue-worker" not in state["threads"]
    assert proc_app.workers() == []


def test_no_embedded_worker_when_disabled(procs: Procs, proc_app: ProcApp) -> None:
    server = start_server(
        procs, proc_app, "--no-reload", PLAINQUEUE_EMBEDDED_WORKER="false"
    )
    status, state = http("GET", f"{server.url}/state")
    assert status == 200
    assert state["embedded"] is False
    perform_over_http(server, "x")
    assert len(proc_app.tasks()) == 1
    assert proc_app.workers() == []


# -- (e) clean exit on signals ---------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_flask_run_exits_cleanly_on_signal(
    procs: Procs, proc_app: ProcApp, signum: int
) -> None:
    server = start_server(procs, proc_app, "--no-reload")
    perform_over_http(server, "s")
    wait_for_run(server, "s")
    server.proc.signal(signum)
    assert server.proc.wait() == 0, server.proc.output()
    # The worker was stopped, not killed with the interpreter.
    assert re.search(r"Worker \S+ stopped", server.proc.stderr()), server.proc.output()


def test_flask_run_hands_back_a_running_task_at_exit(
    procs: Procs, proc_app: ProcApp, tmp_path: Path
) -> None:
    server = start_server(
        procs, proc_app, "--no-reload", PLAINQUEUE_SHUTDOWN_GRACE="0.5"
    )
    started = tmp_path / "started"
    # The task's thread cannot be killed and blocks for an hour; task threads are
    # daemons, so the process exits anyway once the task is handed back.
    never = tmp_path / "never"
    data = {"key": "h", "started": str(started), "release": str(never), "timeout": 3600}
    status, _ = http("POST", f"{server.url}/perform", {"task": "block", "data": data})
    assert status == 200
    wait_for(started.exists, message=server.proc.output)
    server.proc.signal(signal.SIGINT)
    # Exits although the task's thread still blocks, and hands the task back.
    assert server.proc.wait() == 0, server.proc.output()
    (task,) = proc_app.tasks()
    assert task["lease_owner"] is None
    assert task["status"] == "queued"
    assert proc_app.runs() == []


def _block_data(tmp_path: Path) -> tuple[dict[str, str], Path]:
    release = tmp_path / "slow.release"
    data = {
        "key": "slow",
        "started": str(tmp_path / "slow.started"),
        "release": str(release),
    }
    return data, release


@pytest.mark.parametrize("command", ["run", "work"])
def test_a_long_task_does_not_block_others_at_the_defaults(
    procs: Procs, proc_app: ProcApp, tmp_path: Path, command: str
) -> None:
    """Native-citizen issue, item 3: the default PLAINQUEUE_CONCURRENCY runs a
    quick task while a long one runs, in the embedded worker (``flask run``)
    and in ``flask queue work``."""
    data, release = _block_data(tmp_path)
    if command == "run":
        proc = start_server(procs, proc_app).proc
    else:
        proc = procs.start(flask_args("procapp", "queue", "work"), env=proc_app.env())
    proc_app.perform("block", data)
    wait_for(
        lambda: Path(data["started"]).exists(),
        message=lambda: f"the long task to start:\n{proc.output()}",
    )
    proc_app.perform("record", {"key": "quick"})
    try:
        wait_for(
            lambda: [key for key, _ in proc_app.runs()] == ["quick"],
            message=lambda: f"the quick task to run:\n{proc.output()}",
        )
    finally:
        release.write_text("go")
    wait_for(
        lambda: sorted(key for key, _ in proc_app.runs()) == ["quick", "slow"],
        message=lambda: f"the long task to finish:\n{proc.output()}",
    )
