"""Flask-Migrate runs the queue's tables as generated (issue 15, and the plain
column indexes of issue 12): the real ``flask db`` commands on both databases,
then tasks run on the migrated schema, and a second ``migrate`` finds nothing
to change whether the tables came from the migration or from ``create_all``."""

from __future__ import annotations

import json
import subprocess
import typing as t
from pathlib import Path

import pytest
from helpers import child_env
from helpers import flask_args
from helpers import TIMEOUT

pytest.importorskip("flask_migrate")

NO_CHANGES = "No changes in schema detected."


class Migrations:
    """``flask db ...`` and Python code run against ``app`` (``migapp`` or
    ``migexample``, both in tests/apps) in child processes."""

    def __init__(self, uri: str, tmp_path: Path, app: str = "migapp") -> None:
        self.app = app
        self.dir = tmp_path / "migrations"
        self.out = tmp_path / "ran.jsonl"
        self.env = child_env(
            MIGAPP_DB=uri,
            MIGAPP_DIR=str(self.dir),
            MIGAPP_OUT=str(self.out),
            MIGAPP_INSTANCE=str(tmp_path / "instance"),
        )

    def flask(self, *args: str, ok: bool = True) -> str:
        """Run ``flask db ...`` or another command; return its output.

        :param ok: whether it must succeed (else it must fail).
        """
        proc = subprocess.run(
            flask_args(f"{self.app}:create_app", *args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
        )
        output = proc.stdout + proc.stderr
        assert (proc.returncode == 0) == ok, (args, output)
        return output

    def python(self, code: str) -> str:
        """Run ``code`` in a child; return what it printed."""
        import sys

        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def tables(self) -> set[str]:
        """The tables the database holds now, but Alembic's own."""
        names = self.python(
            "import json, sqlalchemy as sa\n"
            f"from {self.app} import create_app\n"
            "app = create_app()\n"
            "with app.app_context():\n"
            "    db = app.extensions['sqlalchemy']\n"
            "    print(json.dumps(sa.inspect(db.engine).get_table_names()))\n"
        )
        return set(json.loads(names)) - {"alembic_version"}

    def queue_tables(self) -> set[str]:
        """The queue's tables the database holds now."""
        return {name for name in self.tables() if name.startswith("plainqueue")}

    def ran(self) -> list[t.Any]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]


@pytest.fixture
def migrations(database_uri: str, tmp_path: Path) -> Migrations:
    return Migrations(database_uri, tmp_path)


@pytest.mark.slow
def test_generated_migration_runs_and_tasks_run_on_it(migrations: Migrations) -> None:
    migrations.flask("db", "init")
    generated = migrations.flask("db", "migrate", "-m", "queue")
    # Every index autogenerate sees on both databases, none skipped.
    assert "skipping" not in generated, generated
    for index in (
        "ix_plainqueue_tasks_claim",
        "ix_plainqueue_tasks_due",
        "ix_plainqueue_tasks_lease",
    ):
        assert f"Detected added index '{index}'" in generated, generated
    migrations.flask("db", "upgrade")
    assert NO_CHANGES in migrations.flask("db", "migrate", "-m", "again")
    (version,) = (migrations.dir / "versions").glob("*.py")
    # A plain migration: nothing of this package is imported to run it.
    assert "flask_plainqueue" not in version.read_text()

    migrations.python(
        "from migapp import create_app, queue, record\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    queue.perform(record, {'n': 1}, priority=5)\n"
        "    queue.perform(record, {'n': 2})\n"
    )
    # One claim loop, so the claim order (priority first) is the run order.
    migrations.flask("queue", "work", "--burst", "--concurrency", "1")
    assert migrations.ran() == [{"n": 1}, {"n": 2}]

    migrations.flask("db", "downgrade")
    assert not migrations.queue_tables()
    migrations.flask("db", "upgrade")
    assert migrations.queue_tables() == {
        "plainqueue_tasks",
        "plainqueue_tasks_periodic",
        "plainqueue_tasks_workers",
        "plainqueue_tasks_paused",
        "plainqueue_tasks_stats",
    }


@pytest.mark.slow
def test_tables_from_create_all_need_no_migration(migrations: Migrations) -> None:
    """A database whose tables came from ``create_all`` gets the migration that
    would create them marked as applied (``db stamp``), as docs/migrations.rst
    says, and matches it."""
    migrations.flask("db", "init")
    migrations.flask("db", "migrate", "-m", "initial")  # on the empty database
    migrations.python(
        "from migapp import create_app, db\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    db.create_all()\n"
    )
    # The migration can't create tables that exist...
    assert "already exists" in migrations.flask("db", "upgrade", ok=False)
    migrations.flask("db", "stamp", "head")
    # ... and needn't: an empty migration against create_all's tables means they
    # are the ones the migration makes (the app's one table is the queue's
    # only company here).
    assert NO_CHANGES in migrations.flask("db", "migrate", "-m", "nothing")
    migrations.flask("db", "downgrade")  # the stamp counts as applied
    assert migrations.tables() == set()


@pytest.mark.slow
def test_example_app_migrates_and_signs_up(database_uri: str, tmp_path: Path) -> None:
    """The repository's example_app, its schema made by Flask-Migrate as
    docs/migrations.rst shows: its tables and the queue's are generated together,
    and a sign-up's email task runs on them."""
    migrations = Migrations(database_uri, tmp_path, app="migexample")
    migrations.flask("db", "init")
    generated = migrations.flask("db", "migrate", "-m", "initial")
    tables = {
        "contact",
        "outbox_email",
        "plainqueue_tasks",
        "plainqueue_tasks_periodic",
        "plainqueue_tasks_workers",
        "plainqueue_tasks_paused",
        "plainqueue_tasks_stats",
    }
    for table in tables:
        assert f"Detected added table '{table}'" in generated, generated
    migrations.flask("db", "upgrade")
    assert migrations.tables() == tables
    assert NO_CHANGES in migrations.flask("db", "migrate", "-m", "again")

    status = migrations.python(
        "from migexample import create_app\n"
        "response = create_app().test_client().post(\n"
        "    '/sign-up', data={'email': 'ann@example.com'}\n"
        ")\n"
        "print(response.status_code)\n"
    )
    assert status.strip() == "302"
    migrations.flask("queue", "work", "--burst")
    sent = migrations.python(
        "import json, sqlalchemy as sa\n"
        "from migexample import create_app\n"
        "from example_app.extensions import db, queue\n"
        "from example_app.models import Contact, OutboxEmail\n"
        "with create_app().app_context():\n"
        "    print(json.dumps({\n"
        "        'to': db.session.scalars(sa.select(OutboxEmail.to)).all(),\n"
        "        'marked': [c.confirmation_sent is not None\n"
        "                   for c in db.session.scalars(sa.select(Contact))],\n"
        "        'left': db.session.scalars(sa.select(queue.Task.id)).all(),\n"
        "    }))\n"
    )
    assert json.loads(sent) == {"to": ["ann@example.com"], "marked": [True], "left": []}

    migrations.flask("db", "downgrade")
    assert migrations.tables() == set()
