"""The embedded worker under gunicorn's gevent workers, started by the
``post_worker_init`` hook in ``tests/apps/gunicorn_conf.py``."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import APPS
from helpers import free_port
from helpers import http
from helpers import http_ready
from helpers import proc_app_fixture
from helpers import ProcApp
from helpers import Procs
from helpers import procs_fixture
from helpers import wait_for

pytest.importorskip("gevent")
pytest.importorskip("gunicorn")

pytestmark = pytest.mark.slow


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    yield from procs_fixture(tmp_path)


@pytest.fixture
def proc_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcApp]:
    yield from proc_app_fixture(tmp_path, monkeypatch)


def test_gunicorn_gevent_workers_run_tasks(procs: Procs, proc_app: ProcApp) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "--worker-class",
        "gevent",
        "--workers",
        "2",
        "--bind",
        f"127.0.0.1:{port}",
        "--config",
        str(APPS / "gunicorn_conf.py"),
        "--graceful-timeout",
        "10",
        "procapp:create_app()",
    ]
    server = procs.start(args, env=proc_app.env())

    def ready() -> bool:
        if server.returncode is not None:
            pytest.fail(f"gunicorn exited with {server.returncode}:\n{server.output()}")
        return http_ready(f"{url}/pid")

    wait_for(ready, message=lambda: f"gunicorn to answer:\n{server.output()}")
    # Each web worker process started one queue worker, in its greenlet thread.
    wait_for(lambda: len(proc_app.workers()) == 2, message=server.output)
    worker_pids = {pid for pid, _, _ in proc_app.workers()}
    assert len(worker_pids) == 2
    assert server.pid not in worker_pids
    assert {name for _, name, _ in proc_app.workers()} == {"plainqueue-worker"}
    status, state = http("GET", f"{url}/state")
    assert status == 200
    assert state["gevent"] is True
    assert state["embedded"] is True

    keys = [f"g{i}" for i in range(20)]
    for key in keys:
        status, body = http(
            "POST", f"{url}/perform", {"task": "record", "data": {"key": key}}
        )
        assert status == 200, f"{body}\n{server.output()}"

    wait_for(
        lambda: len(proc_app.runs()) >= len(keys) and not proc_app.tasks(),
        message=lambda: f"the tasks to run:\n{server.output()}",
    )
    runs = proc_app.runs()
    assert sorted(k for k, _ in runs) == sorted(keys)
    assert {pid for _, pid in runs} <= worker_pids

    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.output()
    assert "Traceback" not in server.stderr(), server.output()
    assert "database is locked" not in server.stderr(), server.output()
    # Both queue workers were stopped, not killed with their processes.
    assert server.stderr().count(" stopped") >= 2, server.output()
