"""docs/quickstart.rst works when pasted (issue 15): its code blocks, in order,
are ``app.py`` in an empty folder; its commands, run there with nothing but the
package importable, serve the form, and the task submitted through it runs, in
the embedded worker and in ``flask queue work``."""

from __future__ import annotations

import configparser
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import textwrap
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import child_env
from helpers import free_port
from helpers import Procs
from helpers import procs_fixture
from helpers import TIMEOUT
from helpers import wait_for

import flask_plainqueue

ROOT = Path(__file__).parent.parent.parent
PAGE = (ROOT / "docs" / "quickstart.rst").read_text()


def _blocks(language: str) -> list[str]:
    """The page's ``code-block:: <language>`` bodies, in order, dedented."""
    pattern = rf"^\.\. code-block:: {language}\n\n((?:(?:[ \t]+.*)?\n)+)"
    return [textwrap.dedent(body) for body in re.findall(pattern, PAGE, re.M)]


def _commands() -> list[list[str]]:
    """Each console block's commands, as words."""
    return [
        [line.strip().removeprefix("$ ") for line in block.splitlines() if line]
        for block in _blocks("console")
    ]


def test_page_shows_the_commands_this_file_runs() -> None:
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "setup.cfg")
    name = metadata["metadata"]["name"]
    assert _commands() == [
        [f"pip install {name}", "flask --app app run"],
        ["flask --app app queue work"],
    ]


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    yield from procs_fixture(tmp_path)


class Project:
    """The pasted ``app.py`` alone in a folder, and the environment of a
    virtualenv where only the package under test was installed."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "project"
        self.dir.mkdir()
        (self.dir / "app.py").write_text("\n".join(_blocks("python")))
        # The package of this checkout and nothing else of the repository:
        # not tests/apps, not example_app.
        site = tmp_path / "site"
        site.mkdir()
        (site / "flask_plainqueue").symlink_to(Path(flask_plainqueue.__file__).parent)
        self.env = child_env()
        self.env["PYTHONPATH"] = str(site)
        self.database = self.dir / "instance" / "quickstart.db"

    def command(self, line: str, *extra: str) -> list[str]:
        """A command from the page, run with this interpreter."""
        words = shlex.split(line)
        assert words[0] == "flask"
        return [sys.executable, "-m", *words, *extra]

    def python(self, code: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def welcomed(self) -> dict[str, bool]:
        """Each contact's ``welcomed``, read from the database file."""
        conn = sqlite3.connect(self.database, timeout=30)
        try:
            return {
                e: bool(w)
                for e, w in conn.execute("SELECT email, welcomed FROM contact")
            }
        finally:
            conn.close()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def _answers(url: str) -> bool:
    try:
        _get(url)
    except OSError:
        return False
    return True


@pytest.mark.slow
def test_pasted_quickstart_runs(project: Project, procs: Procs) -> None:
    # Nothing of the repository but the package can be imported.
    found = project.python(
        "import importlib.util as u\n"
        "print([n for n in ('example_app', 'procapp', 'helpers') if u.find_spec(n)])"
    )
    assert found.strip() == "[]"
    (_, run), (work,) = _commands()

    port = free_port()  # the page's command, on a port of its own
    server = procs.start(
        project.command(run, "--port", str(port)), env=project.env, cwd=project.dir
    )
    url = f"http://127.0.0.1:{port}/"

    def ready() -> bool:
        if server.returncode is not None:
            pytest.fail(f"flask run exited:\n{server.output()}")
        return _answers(url)

    wait_for(ready, message=lambda: f"flask run to answer:\n{server.output()}")
    form = urllib.parse.urlencode({"email": "ann@example.com"}).encode()
    with urllib.request.urlopen(url, data=form, timeout=10) as response:
        assert response.url == url  # redirected back to the page
    wait_for(
        lambda: "ann@example.com: welcomed" in _get(url),
        message=lambda: f"the task to run:\n{server.output()}",
    )
    assert "Welcome, ann@example.com!" in server.stdout()
    server.signal(signal.SIGINT)
    assert server.wait() == 0, server.output()

    # A task stored while no server runs is run by a `flask queue work` process.
    project.python(
        "from app import Contact, app, db, queue, welcome\n"
        "with app.app_context():\n"
        "    contact = Contact(email='bob@example.com')\n"
        "    db.session.add(contact)\n"
        "    db.session.flush()\n"
        "    queue.perform(welcome, {'contact_id': contact.id})\n"
    )
    assert project.welcomed() == {"ann@example.com": True, "bob@example.com": False}
    worker = procs.start(project.command(work), env=project.env, cwd=project.dir)
    wait_for(
        lambda: project.welcomed()["bob@example.com"],
        message=lambda: f"flask queue work to run the task:\n{worker.output()}",
    )
    assert "Welcome, bob@example.com!" in worker.stdout()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
