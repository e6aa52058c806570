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
    def __init__(self, uri: str, tmp_path: Path) -> None:
        self.dir = tmp_path / "migrations"
        self.out = tmp_path / "ran.jsonl"
        self.env = child_env(
            MIGAPP_DB=uri, MIGAPP_DIR=str(self.dir), MIGAPP_OUT=str(self.out)
        )

    def flask(self, *args: str) -> str:
        proc = subprocess.run(
            flask_args("migapp:create_app", *args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, (args, output)
        return output

    def python(self, code: str) -> None:
        import sys

        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def queue_tables(self) -> set[str]:
        """The queue's tables the database holds now."""
        listing = self.out.with_name("tables.json")
        self.python(
            "import json, sqlalchemy as sa\n"
            "from migapp import create_app, db\n"
            "app = create_app()\n"
            "with app.app_context():\n"
            "    names = sa.inspect(db.engine).get_table_names()\n"
            f"open({str(listing)!r}, 'w').write(json.dumps(names))\n"
        )
        return {
            n for n in json.loads(listing.read_text()) if n.startswith("plainqueue")
        }

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
    for index in ("ix_plainqueue_tasks_claim", "ix_plainqueue_tasks_due"):
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
    migrations.flask("queue", "work", "--burst")
    assert migrations.ran() == [{"n": 1}, {"n": 2}]

    migrations.flask("db", "downgrade")
    assert not migrations.queue_tables()
    migrations.flask("db", "upgrade")
    assert migrations.queue_tables() == {
        "plainqueue_tasks",
        "plainqueue_tasks_periodic",
    }


@pytest.mark.slow
def test_tables_from_create_all_need_no_migration(migrations: Migrations) -> None:
    migrations.flask("db", "init")
    migrations.python(
        "from migapp import create_app, db\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    db.create_all()\n"
    )
    # The app's other tables are all the queue's company here: an empty
    # migration against create_all's tables means the queue's match.
    assert NO_CHANGES in migrations.flask("db", "migrate", "-m", "nothing")
