"""``queue.stream`` served by real servers (gunicorn with sync and with gevent
workers, and ``flask run``), read over HTTP while a ``flask queue work``
process runs the task: example_app's monthly report."""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import subprocess
import sys
import typing as t
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import child_env
from helpers import flask_args
from helpers import free_port
from helpers import Procs
from helpers import procs_fixture
from helpers import TIMEOUT
from helpers import wait_for

ROOT = Path(__file__).parent.parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    yield from procs_fixture(tmp_path)


def _server_args(kind: str, port: int, factory: str) -> list[str]:
    if kind == "flask run":
        return flask_args(
            factory, "run", "--port", str(port), "--no-reload", "--no-debugger"
        )
    pytest.importorskip("gunicorn")
    if kind == "gevent":
        pytest.importorskip("gevent")
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--worker-class",
        kind,
        "--workers",
        "2",
        "--bind",
        f"127.0.0.1:{port}",
        factory,
    ]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _events(host: str, port: int, path: str, cookie: str) -> Iterator[dict[str, t.Any]]:
    """The server-sent events of ``path``, parsed, as they arrive."""
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers={"Cookie": cookie})
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        fields: dict[str, str] = {}
        while True:
            line = response.fp.readline().decode()
            if not line:
                return
            line = line.rstrip("\n")
            if line.startswith(":"):
                continue
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
                continue
            if fields:
                yield {**fields, "data": json.loads(fields["data"])}
                fields = {}
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["sync", "gevent", "flask run"])
def test_stream_over_http(procs: Procs, tmp_path: Path, kind: str) -> None:
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text(
        "REPORT_DAY_SECONDS = 0.05\nPLAINQUEUE_POLL_INTERVAL = 0.2\n"
        # The report must be run by the flask queue work process alone.
        "PLAINQUEUE_EMBEDDED_WORKER = False\n"
    )
    factory = f"example_app:create_app(instance_path={str(instance)!r})"
    env = child_env(PYTHONPATH=str(ROOT))
    port = free_port()
    server = procs.start(_server_args(kind, port, factory), env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: server.returncode is None and _answers(f"{url}/login"),
        message=server.output,
    )
    worker = procs.start(flask_args(factory, "queue", "work"), env=env, cwd=tmp_path)

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = urllib.parse.urlencode({"password": "admin"}).encode()
    opener.open(f"{url}/login", data=form, timeout=TIMEOUT)
    started = opener.open(
        f"{url}/reports/",
        data=urllib.parse.urlencode({"month": "2026-11"}).encode(),
        timeout=TIMEOUT,
    )
    task_id = int(started.url.rsplit("/", 1)[1])
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)

    events = list(_events("127.0.0.1", port, f"/reports/{task_id}/events", cookie))
    names = [e["event"] for e in events]
    assert names[-1] == "done", (names, worker.output())
    assert events[-1]["data"] == {
        "state": "succeeded",
        "result": {"month": "2026-11", "signups": 0, "busiest_day": None},
    }
    done = [e["data"]["done"] for e in events if e["event"] == "progress"]
    assert len(done) >= 2 and done[-1] == 30 and done == sorted(set(done))
    ids = [int(e["id"].split(".")[0]) for e in events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))


def test_processes_starting_together_on_a_new_database_all_start(
    tmp_path: Path,
) -> None:
    """gunicorn's workers (and a ``flask queue work`` beside them) each run
    ``create_app()``, whose ``db.create_all()`` raced the others' on a new
    database: the loser saw "table ... already exists", its worker failed to
    boot and gunicorn stopped (CI saw the stream test's connection reset)."""
    instance = tmp_path / "instance"
    instance.mkdir()
    go = tmp_path / "go"
    script = (
        "import os, pathlib, sys, time\n"
        "from example_app import create_app\n"
        f"pathlib.Path({str(tmp_path)!r}, 'ready-' + sys.argv[1]).touch()\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.001)\n"
        f"create_app(instance_path={str(instance)!r})\n"
    )
    env = child_env(PYTHONPATH=str(ROOT))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(n)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    # Every child has imported the app and waits at the start line.
    wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == len(children))
    go.touch()
    for child in children:
        _, err = child.communicate(timeout=TIMEOUT)
        assert child.returncode == 0, err
