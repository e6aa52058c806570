"""``flask queue`` in real ``python -m flask`` processes: one smoke run per
command group, proving the command loads the app, finds the queue's database
and reports through its exit status and standard streams. What each command
does is tested in-process with the CLI runner in
``tests/integration/test_cli.py`` and ``tests/integration/test_transfer.py``;
``flask queue work`` in real processes also in ``test_processes.py``."""

from __future__ import annotations

import json
import subprocess
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import APPS
from helpers import child_env
from helpers import flask_args

#: Seconds one ``flask`` command may take on a loaded machine.
COMMAND_TIMEOUT = 120


def test_task_commands_in_a_real_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inspection and admin commands (status, list, show, retry, delete,
    purge): ``list --failed`` run by ``python -m flask`` on a database another
    process wrote."""
    monkeypatch.syspath_prepend(str(APPS))
    import opsapp

    uri = f"sqlite:///{tmp_path / 'ops.db'}"
    instance = str(tmp_path / "instance")
    monkeypatch.setenv("OPSAPP_DATABASE_URI", uri)
    monkeypatch.setenv("OPSAPP_INSTANCE_PATH", instance)
    app = opsapp.create_app()
    with app.app_context():
        try:
            dead = opsapp.queue.perform("ops.fail", {"error": "kaputt"})
            opsapp.queue.drain()
            opsapp.queue.perform("ops.ok", 1, delay=3600)

            listed = subprocess.run(
                flask_args("opsapp:create_app", "queue", "list", "--failed"),
                env=child_env(OPSAPP_DATABASE_URI=uri, OPSAPP_INSTANCE_PATH=instance),
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
            )
            assert listed.returncode == 0, listed.stderr
            lines = listed.stdout.splitlines()
            assert lines[0].split()[:4] == ["ID", "NAME", "STATE", "QUEUE"]
            assert lines[1].split()[:4] == [str(dead), "ops.fail", "dead", "default"]
            assert len(lines) == 2  # the scheduled task is not dead
            assert "ValueError: kaputt" in listed.stdout
            assert "\x1b[" not in listed.stdout  # not a TTY: no colour
            assert listed.stderr == ""
        finally:
            opsapp.db.session.remove()
            opsapp.db.engine.dispose()


def test_export_import_then_work_with_the_flask_command(
    tmp_path: Path, database_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moving a queue to another database as the docs tell a user to (SQLite to
    PostgreSQL, or to another SQLite file): ``flask queue export >
    tasks.jsonl`` on the old app, ``flask queue import tasks.jsonl`` on the
    new, then ``flask queue work --burst`` runs every task there, once."""
    monkeypatch.syspath_prepend(str(APPS))
    import pgapp

    old_uri = f"sqlite:///{tmp_path / 'old.db'}"
    for uri in (old_uri, database_uri):
        monkeypatch.setenv("PGAPP_DATABASE_URI", uri)
        app = pgapp.create_app()
        with app.app_context():
            pgapp.db.create_all()
            if uri == old_uri:
                pgapp.queue.perform_many(
                    pgapp.record, [{"key": f"k{i}"} for i in range(50)]
                )
            pgapp.db.session.remove()
            pgapp.db.engine.dispose()

    def flask(
        uri: str, *args: str, **kwargs: t.Any
    ) -> subprocess.CompletedProcess[t.Any]:
        return subprocess.run(
            flask_args("pgapp:create_app", "queue", *args),
            env=child_env(PGAPP_DATABASE_URI=uri),
            timeout=COMMAND_TIMEOUT,
            **kwargs,
        )

    path = tmp_path / "tasks.jsonl"
    with path.open("wb") as out:
        exported = flask(old_uri, "export", stdout=out, stderr=subprocess.PIPE)
    assert exported.returncode == 0, exported.stderr
    assert b"Exported 50 tasks (0 dead) to standard output." in exported.stderr
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 50
    assert {json.loads(line)["name"] for line in lines} == {"record"}

    imported = flask(database_uri, "import", str(path), capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == "Imported 50 tasks.\n"

    worked = flask(database_uri, "work", "--burst", capture_output=True, text=True)
    assert worked.returncode == 0, worked.stderr
    engine = sa.create_engine(database_uri, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            keys = conn.execute(
                sa.text("SELECT key FROM pg_runs WHERE runs = 1")
            ).scalars()
            assert sorted(keys) == sorted(f"k{i}" for i in range(50))
            assert conn.execute(sa.text("SELECT count(*) FROM pg_runs")).scalar() == 50
            assert (
                conn.execute(sa.text("SELECT count(*) FROM plainqueue_tasks")).scalar()
                == 0
            )
    finally:
        engine.dispose()
