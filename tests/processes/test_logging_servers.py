"""Without any logging setup in the app, a failing task is logged through
Flask's default handler under ``flask run`` and gunicorn, and a task that
succeeds is not (its one-line-per-task records are ``DEBUG``, opt-in).
The rule itself, in-process, is in ``tests/unit/test_default_logging.py``."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import child_env
from helpers import flask_args
from helpers import free_port
from helpers import http_ready
from helpers import Procs
from helpers import procs_fixture
from helpers import wait_for

DOCS_EXAMPLES = Path(__file__).parent.parent.parent / "docs" / "examples"

#: An app that configures no logging; ``/fail`` and ``/ok`` enqueue a task.
APP = """
import os
from pathlib import Path

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue

db = SQLAlchemy()
queue = PlainQueue(db=db)


@queue.task(name="logs.fail", max_retries=0)
def fail(data):
    raise ValueError("the SMTP server refused")


@queue.task(name="logs.ok")
def ok(data):
    Path(data).write_text("done")


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["LOGSAPP_DATABASE_URI"]
    app.config["PLAINQUEUE_POLL_INTERVAL"] = 0.2
    db.init_app(app)
    queue.init_app(app)
    with app.app_context():
        db.create_all()

    @app.get("/fail")
    def enqueue_fail():
        return str(fail.perform(None))

    @app.get("/ok")
    def enqueue_ok():
        return str(ok.perform(os.environ["LOGSAPP_MARKER"]))

    @app.get("/ready")
    def ready():
        return "{}"

    return app
"""


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    yield from procs_fixture(tmp_path)


def _serve_and_fail_a_task(
    procs: Procs, tmp_path: Path, args: list[str], port: int
) -> str:
    """Start the server, run a task that succeeds and one that fails; return
    the server's stderr once both have run."""
    (tmp_path / "logsapp.py").write_text(APP)
    marker = tmp_path / "ok.txt"
    env = child_env(
        LOGSAPP_DATABASE_URI=f"sqlite:///{tmp_path / 'logs.db'}",
        LOGSAPP_MARKER=str(marker),
    )
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    proc = procs.start(args, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.returncode is not None:
            pytest.fail(f"the server exited:\n{proc.output()}")
        return http_ready(f"{url}/ready")

    wait_for(ready, message=lambda: f"the server to answer:\n{proc.output()}")
    import urllib.request

    with urllib.request.urlopen(f"{url}/ok", timeout=10) as response:
        ok_id = response.read().decode()
    with urllib.request.urlopen(f"{url}/fail", timeout=10) as response:
        fail_id = response.read().decode()
    wait_for(marker.exists, message=lambda: f"the ok task:\n{proc.output()}")
    needle = f"Task {fail_id} (logs.fail) failed"
    wait_for(
        lambda: needle in proc.stderr(),
        message=lambda: f"{needle!r} in stderr:\n{proc.output()}",
    )
    stderr = proc.stderr()
    assert f"Task {ok_id} (logs.ok)" not in stderr, stderr
    return stderr


def test_flask_run_logs_a_failing_task(procs: Procs, tmp_path: Path) -> None:
    port = free_port()
    stderr = _serve_and_fail_a_task(
        procs, tmp_path, flask_args("logsapp", "run", "--port", str(port)), port
    )
    (line,) = [line for line in stderr.splitlines() if "(logs.fail) failed" in line]
    # Flask's default handler and format: "[time] LEVEL in module: message".
    # Flask's format: "[time] ERROR in <module>: ...", here a worker module.
    assert re.search(r"\] ERROR in \w+: Task \d+ \(logs.fail\) failed", line), line
    assert "ValueError: the SMTP server refused" in line, line
    # The worker's start, at INFO, is shown too.
    assert "INFO in worker: Worker" in stderr, stderr


@pytest.mark.slow
def test_gunicorn_logs_a_failing_task(procs: Procs, tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(DOCS_EXAMPLES / "gunicorn.conf.py"),
        "--workers",
        "1",
        "--bind",
        f"127.0.0.1:{port}",
        "logsapp:create_app()",
    ]
    stderr = _serve_and_fail_a_task(procs, tmp_path, args, port)
    assert re.search(r"\] ERROR in \w+: Task \d+ \(logs.fail\) failed", stderr), stderr
