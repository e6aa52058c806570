"""The docs' gunicorn settings (docs/examples/gunicorn.conf.py) run tasks in
gunicorn's worker processes, with sync and gevent workers."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import typing as t
import urllib.error
import urllib.request
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent.parent / "docs" / "examples"


def _sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'docs.db'}"


# -- gunicorn ---------------------------------------------------------------

GUNICORN_APP = """
import os
from pathlib import Path

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue

db = SQLAlchemy()
queue = PlainQueue(db=db)


@queue.task(name="record_pid")
def record_pid(data):
    Path(data["path"]).write_text(str(os.getpid()))


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DOCS_TEST_DATABASE_URI"]
    db.init_app(app)
    queue.init_app(app)
    with app.app_context():
        db.create_all()

    @app.get("/enqueue")
    def enqueue():
        return str(record_pid.perform({"path": request.args["path"]}))

    return app
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(
    condition: t.Callable[[], bool], proc: subprocess.Popen[str], what: str
) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"gunicorn exited before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["sync", "gevent"])
def test_gunicorn_example_runs_tasks_in_worker_processes(
    tmp_path: Path, worker_class: str
) -> None:
    pytest.importorskip("gunicorn")
    if worker_class == "gevent":
        pytest.importorskip("gevent")
    (tmp_path / "docsapp.py").write_text(GUNICORN_APP)
    port = _free_port()
    marker = tmp_path / "ran.txt"
    env = {**os.environ, "DOCS_TEST_DATABASE_URI": _sqlite_uri(tmp_path)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(EXAMPLES / "gunicorn.conf.py"),
            "--workers",
            "1",
            "--worker-class",
            worker_class,
            "--bind",
            f"127.0.0.1:{port}",
            "--chdir",
            str(tmp_path),
            "docsapp:create_app()",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        task_id: list[str] = []

        def enqueued() -> bool:
            url = f"http://127.0.0.1:{port}/enqueue?path={marker}"
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    task_id.append(response.read().decode())
            except (urllib.error.URLError, ConnectionError):
                return False
            return True

        _wait_for(enqueued, proc, "the app to answer")
        _wait_for(
            lambda: marker.exists() and marker.read_text() != "", proc, "the task"
        )
        # The task ran in a gunicorn worker process, not in the master.
        assert int(marker.read_text()) != proc.pid
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "Exception" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    with sqlite3.connect(tmp_path / "docs.db") as conn:
        assert conn.execute("SELECT count(*) FROM plainqueue_tasks").fetchone() == (0,)
    conn.close()
