"""docs/scheduling.rst's examples (docs/examples/scheduling_app.py) do what the
page says."""

from __future__ import annotations

import datetime
import importlib
import types
from pathlib import Path

import pytest
import sqlalchemy as sa

EXAMPLES = Path(__file__).parent.parent.parent / "docs" / "examples"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("scheduling_app")


def test_scheduling_examples(example: types.ModuleType, tmp_path: Path) -> None:
    app = example.create_app(f"sqlite:///{tmp_path / 'sched.db'}")
    queue, db = example.queue, example.db
    with app.app_context():
        ids = example.enqueue_examples()
        rows = {r.id: r for r in db.session.scalars(sa.select(queue.Task))}
        assert sorted(rows) == sorted(ids)
        assert rows[ids[2]].priority == 10
        assert rows[ids[0]].queue == "emails"
        assert rows[ids[1]].run_at == datetime.datetime(
            2030, 1, 1, 12, tzinfo=datetime.timezone.utc
        )
        # Only the urgent and the unique one are due now.
        assert queue.drain() == 2

        db.session.add_all([example.Account(id=1, balance=10), example.Account(id=2)])
        db.session.commit()
        queue.perform(example.move_credit, {"from": 1, "to": 2, "amount": 4})
        queue.perform(example.poll_payment, {"status": "pending"})
        assert queue.drain() == 2
        db.session.expire_all()
        assert db.session.get(example.Account, 2).balance == 4
        (waiting,) = db.session.scalars(
            sa.select(queue.Task).where(queue.Task.name == "poll_payment")
        ).all()
        assert waiting.failed_nr == 0  # Retry is not a failure

    schedules = {d.name: str(d.schedule) for d in queue.registry if d.schedule}
    assert schedules == {
        "refresh_cache": "cron '*/5 * * * *'",
        "heartbeat": "every 0:00:30",
        "nightly": "cron '0 3 * * *' (Europe/Berlin)",
    }
