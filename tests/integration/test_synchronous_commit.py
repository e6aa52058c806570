"""``PLAINQUEUE_POSTGRESQL_SYNCHRONOUS_COMMIT`` (issue 12): the worker's own
claims, settles, lease extensions and hand-backs commit with it; enqueues,
atomic tasks and success callbacks keep the server's setting. Each write to the
queue table is recorded by a trigger with the ``synchronous_commit`` of its
transaction."""

from __future__ import annotations

import datetime
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app

from flask_plainqueue import PlainQueue
from flask_plainqueue.claims import ClaimRequest

TABLE = "plainqueue_tasks"


class Recorded(t.NamedTuple):
    app: t.Any
    db: t.Any
    queue: PlainQueue
    server: str

    def modes(self) -> list[tuple[str, str]]:
        """(operation, synchronous_commit) of every write since the last call."""
        with self.app.app_context():
            rows = self.db.session.execute(
                sa.text("DELETE FROM commit_modes RETURNING n, op, mode")
            ).all()
            self.db.session.commit()
        return [(op, mode) for _, op, mode in sorted(rows)]


def _recorded(uri: str, tmp_path: Path, setting: str | None) -> Iterator[Recorded]:
    app, db, queue = create_test_app(
        uri, tmp_path / "instance", PLAINQUEUE_POSTGRESQL_SYNCHRONOUS_COMMIT=setting
    )

    @queue.task(name="ok")
    def ok(data: t.Any) -> None: ...

    @queue.task(name="fails", max_retries=0)
    def fails(data: t.Any) -> None:
        raise RuntimeError("fails on purpose")

    @queue.task(name="atomic", atomic=True)
    def atomic(data: t.Any) -> None: ...

    @queue.task(name="enqueues")
    def enqueues(data: t.Any) -> None:
        queue.perform(ok, None)

    with app.app_context():
        db.create_all()
        for statement in (
            "CREATE TABLE commit_modes (n serial, op text, mode text)",
            "CREATE FUNCTION record_commit_mode() RETURNS trigger AS $$"
            " BEGIN INSERT INTO commit_modes (op, mode)"
            " VALUES (TG_OP, current_setting('synchronous_commit'));"
            " RETURN NULL; END $$ LANGUAGE plpgsql",
            f"CREATE TRIGGER record AFTER INSERT OR UPDATE OR DELETE ON {TABLE}"
            " FOR EACH ROW EXECUTE FUNCTION record_commit_mode()",
        ):
            db.session.execute(sa.text(statement))
        server = db.session.execute(sa.text("SHOW synchronous_commit")).scalar_one()
        db.session.commit()
    yield Recorded(app, db, queue, server)
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


@pytest.fixture(params=[None, "off", "LOCAL"], ids=["server", "off", "local"])
def recorded(
    request: pytest.FixtureRequest, postgresql_uri: str, tmp_path: Path
) -> Iterator[Recorded]:
    yield from _recorded(postgresql_uri, tmp_path, request.param)


def _bookkeeping(recorded: Recorded) -> str:
    setting = recorded.queue.settings(recorded.app).postgresql_synchronous_commit
    return recorded.server if setting is None else setting


def _run(recorded: Recorded, name: str) -> tuple[int, list[tuple[str, str]]]:
    """Enqueue a task of ``name`` and run it; its id and the writes of the run."""
    task_id = recorded.queue.perform(name, 1)
    recorded.modes()
    assert recorded.queue.drain(name) == 1
    return task_id, recorded.modes()


@pytest.mark.postgresql
def test_worker_bookkeeping_commits_with_the_setting_and_enqueues_do_not(
    recorded: Recorded,
) -> None:
    queue, server, worker = recorded.queue, recorded.server, _bookkeeping(recorded)
    with recorded.app.app_context():
        queue.perform("ok", 1)
        assert recorded.modes() == [("INSERT", server)]
        assert queue.drain() == 1
        # The claim (an UPDATE), then the settle that deletes the finished task.
        assert recorded.modes() == [("UPDATE", worker), ("DELETE", worker)]

        failing, modes = _run(recorded, "fails")
        assert modes == [("UPDATE", worker), ("UPDATE", worker)]
        info = queue.get(failing)
        assert info is not None and info.state == "dead"


@pytest.mark.postgresql
def test_enqueues_from_tasks_and_atomic_successes_keep_the_servers_setting(
    recorded: Recorded,
) -> None:
    server, worker = recorded.server, _bookkeeping(recorded)
    with recorded.app.app_context():
        # An atomic task's success deletes its row in the task's own transaction.
        assert _run(recorded, "atomic")[1] == [("UPDATE", worker), ("DELETE", server)]
        assert _run(recorded, "enqueues")[1] == [
            ("UPDATE", worker),
            ("INSERT", server),
            ("DELETE", worker),
        ]


@pytest.mark.postgresql
def test_lease_extensions_and_hand_backs_commit_with_the_setting(
    recorded: Recorded,
) -> None:
    queue, worker = recorded.queue, _bookkeeping(recorded)
    with recorded.app.app_context():
        (task_id,) = queue.perform_many("ok", [1])
        store = queue.store()
        now = store.clock()
        request = ClaimRequest(
            owner="tester",
            names=("ok",),
            batch_sizes={"ok": 1},
            now=now,
            until=now + datetime.timedelta(seconds=60),
            sweep=False,
        )
        assert [task.id for task in store.claim(request)] == [task_id]
        recorded.modes()
        until = now + datetime.timedelta(seconds=120)
        assert store.extend("tester", [task_id], until) == 1
        assert recorded.modes() == [("UPDATE", worker)]
        assert store.release("tester", [task_id], now) == 1
        assert recorded.modes() == [("UPDATE", worker)]


def test_a_sqlite_app_accepts_the_setting_and_ignores_it(tmp_path: Path) -> None:
    app, db, queue = create_test_app(
        f"sqlite:///{tmp_path / 'app.db'}",
        tmp_path / "instance",
        PLAINQUEUE_POSTGRESQL_SYNCHRONOUS_COMMIT="off",
    )
    ran: list[int] = []
    queue.task(name="ok")(ran.append)
    with app.app_context():
        db.create_all()
        queue.perform("ok", 7)
        assert queue.drain() == 1
        db.engine.dispose()
    assert ran == [7]
