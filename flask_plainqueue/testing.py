"""The pytest plugin (the ``pytest11`` entry point ``plainqueue``): the
``plainqueue`` fixture, which shows and runs the tasks of the app under test on
a clock that only the test moves.

pytest imports this module in every run wherever flask-plainqueue is
installed, so it imports nothing heavy (Flask, SQLAlchemy) until a test asks
for the fixture, and it touches no app until then.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import json
import typing as t
from collections.abc import Iterator

import pytest

from . import validate
from .clock import as_utc
from .exceptions import InvalidArgument

if t.TYPE_CHECKING:
    from flask import Flask

    from .extension import PlainQueue
    from .info import TaskInfo
    from .tasks import JSONValue
    from .tasks import TaskDefinition
    from .worker import Worker

#: How many ticks of periodic tasks one :meth:`FakeClock.advance` may pass.
MAX_TICKS = 10_000
#: Tasks read per query by :meth:`QueueFixture.enqueued`.
_PAGE = 500
#: Waiting tasks listed in a failed :meth:`QueueFixture.assert_enqueued`.
_SHOWN = 20


class _NotGiven(enum.Enum):
    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "NOT_GIVEN"


#: The default of :meth:`QueueFixture.assert_enqueued`'s ``data`` and
#: ``count``: not given (``None`` is a valid ``data``).
NOT_GIVEN = _NotGiven.NOT_GIVEN


class FakeClock:
    """A clock that stands still until the test moves it. Calling it returns
    the current time, timezone-aware UTC, like the queue's real clock.

    :param start: the time it starts at (timezone-aware).

    .. versionadded:: 0.1
    """

    def __init__(self, start: datetime.datetime) -> None:
        self._now = _aware("start", start)

    def __call__(self) -> datetime.datetime:
        return self._now

    @property
    def now(self) -> datetime.datetime:
        """The current time, timezone-aware UTC."""
        return self._now

    def advance(self, seconds: float | datetime.timedelta) -> datetime.datetime:
        """Move the clock forward by ``seconds`` (a number or a
        :class:`~datetime.timedelta`, not negative); return the new time.

        :raises InvalidArgument: ``seconds`` is negative or not a duration.
        """
        delta = validate.seconds("seconds", seconds, error=InvalidArgument)
        self._move(self._now + datetime.timedelta(seconds=delta), passing=True)
        return self._now

    def set(self, when: datetime.datetime) -> datetime.datetime:
        """Jump to ``when`` (timezone-aware; earlier or later); return it.

        :raises InvalidArgument: ``when`` is naive or not a datetime.
        """
        self._move(_aware("when", when), passing=False)
        return self._now

    def _move(self, target: datetime.datetime, *, passing: bool) -> None:
        self._now = target

    def __repr__(self) -> str:
        return f"<FakeClock {self._now.isoformat()}>"


class QueueFixture:
    """What the ``plainqueue`` fixture gives a test: the waiting tasks of the
    app under test, a way to run them, and the clock they are due on.

    Each method pushes an app context of the app when none of it is active.

    :param app: the app under test.
    :param queue: the queue registered on it.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Flask, queue: PlainQueue) -> None:
        #: The app under test.
        self.app = app
        #: The :class:`~flask_plainqueue.PlainQueue` registered on it.
        self.queue = queue
        store = queue.store(app)
        #: The clock every time of the queue is computed on while the fixture
        #: is active: delays, retry back-off, leases and periodic ticks. It
        #: starts at the queue's real time (the database's on PostgreSQL) and
        #: moves only when the test moves it.
        self.clock: FakeClock = _QueueClock(as_utc(store.clock()), self)
        self._worker: Worker | None = None
        self._schedules_seen = False

    @contextlib.contextmanager
    def _active(self) -> Iterator[QueueFixture]:
        """Put :attr:`clock` in place for the block, then the real one back."""
        try:
            with self.queue.store(self.app).use_clock(self.clock):
                yield self
        finally:
            worker, self._worker = self._worker, None
            if worker is not None:
                worker.close()
                self.queue.forget_worker(worker)

    # -- looking ----------------------------------------------------------------

    def enqueued(
        self, task: TaskDefinition[t.Any, t.Any] | str | None = None
    ) -> list[TaskInfo]:
        """The tasks waiting to run (of ``task``, a definition or its name):
        due now or later, in the order workers claim them (priority, then due
        time, then id). Running and dead tasks are not listed; a task whose
        worker's lease ran out is waiting again.

        .. versionadded:: 0.1
        """
        from .schema import TaskState

        name = None if task is None else self._name(task)
        found: list[TaskInfo] = []
        with self._context():
            while True:
                page = self.queue.tasks(
                    state=(TaskState.PENDING, TaskState.SCHEDULED),
                    name=name,
                    limit=_PAGE,
                    offset=len(found),
                )
                found.extend(page)
                if len(page) < _PAGE:
                    return found

    def assert_enqueued(
        self,
        task: TaskDefinition[t.Any, t.Any] | str,
        data: JSONValue | _NotGiven = NOT_GIVEN,
        count: int | _NotGiven = NOT_GIVEN,
    ) -> list[TaskInfo]:
        """Assert that tasks of ``task`` (a definition or its name) are waiting
        to run: at least one, or exactly ``count``; with ``data``, only those
        whose data equals it (as JSON: a tuple matches a list) count. Returns
        the matching tasks, as :meth:`enqueued` lists them.

        :raises AssertionError: the tasks are not there; the message lists
            what is waiting.
        :raises InvalidArgument: ``count`` is not a whole number from 0, or
            ``data`` is not a JSON value.

        .. versionadded:: 0.1
        """
        __tracebackhide__ = True
        name = self._name(task)
        if count is not NOT_GIVEN:
            validate.whole("count", count, error=InvalidArgument, minimum=0)
        expected = NOT_GIVEN if data is NOT_GIVEN else _as_json("data", data)
        waiting = self.enqueued()
        matches = [
            info
            for info in waiting
            if info.name == name
            and (expected is NOT_GIVEN or _decoded(info) == expected)
        ]
        if len(matches) == count or (count is NOT_GIVEN and matches):
            return matches
        raise AssertionError(
            _expectation(name, data, count, len(matches))
            + "\n"
            + _listing(waiting, self.clock.now)
        )

    # -- running ----------------------------------------------------------------

    def run(self, task: TaskDefinition[t.Any, t.Any] | str | None = None) -> int:
        """Run the tasks that are due (only those of ``task``, a definition or
        its name, when given) as :meth:`PlainQueue.drain
        <flask_plainqueue.PlainQueue.drain>` does, until none is due; return
        how many attempts ran (failed ones count). Periodic tasks whose tick
        has come are enqueued first, as a worker's scheduler would.

        .. versionadded:: 0.1
        """
        with self._context():
            self._tick(self.clock.now)
            return self.queue.drain(task)

    # -- the periodic tasks' ticks -----------------------------------------------

    def _moved(
        self, clock: FakeClock, target: datetime.datetime, *, passing: bool
    ) -> None:
        """Move ``clock`` to ``target``, enqueueing the periodic tasks' ticks
        on the way (``passing``: as a running worker would, each on time) or
        at the end (a jump: as a worker that starts then would)."""
        if not self._schedules_seen:
            if not passing:
                # Before the schedules were first looked at, set() only says
                # when the test starts: nothing is late yet.
                clock._now = target
                return
            self._tick(clock._now)
        if passing:
            for tick in self._ticks_between(clock._now, target):
                clock._now = tick
                self._tick(tick)
        clock._now = target
        self._tick(target)

    def _ticks_between(
        self, start: datetime.datetime, end: datetime.datetime
    ) -> list[datetime.datetime]:
        ticks: set[datetime.datetime] = set()
        for definition in self.queue.registry:
            schedule = definition.schedule
            if schedule is None:
                continue
            tick = schedule.next(start)
            while tick <= end:
                ticks.add(tick)
                if len(ticks) > MAX_TICKS:
                    raise InvalidArgument(
                        f"advance() would pass more than {MAX_TICKS} ticks of"
                        f" periodic tasks ({definition.name!r} runs"
                        f" {schedule}). Advance in smaller steps, or jump with"
                        " clock.set(), after which a periodic task runs once"
                        " for the ticks it missed (unless catch_up=False)."
                    )
                tick = schedule.next(tick)
        return sorted(ticks)

    def _tick(self, now: datetime.datetime) -> None:
        """Enqueue the periodic tasks whose tick has come at ``now`` (the first
        time, only note the current ticks: a new schedule waits for its next
        one)."""
        self._schedules_seen = True
        if not any(d.schedule is not None for d in self.queue.registry):
            return
        if self._worker is None:
            # Never run: only its scheduler is used, on the fake clock.
            self._worker = self.queue.worker(self.app)
        self._worker.scheduler.tick(now)

    # -- helpers ------------------------------------------------------------------

    def _context(self) -> t.ContextManager[object]:
        from flask import current_app
        from flask import has_app_context

        if has_app_context() and current_app._get_current_object() is self.app:  # type: ignore[attr-defined]
            return contextlib.nullcontext()
        return self.app.app_context()

    def _name(self, task: object) -> str:
        from .tasks import TaskDefinition

        if isinstance(task, str):
            return self.queue.registry.get(task).name
        if isinstance(task, TaskDefinition):
            if task.name in self.queue.registry:
                if self.queue.registry.get(task.name) is task:
                    return task.name
            raise InvalidArgument(
                f"task {task.name!r} is not registered with this app's PlainQueue."
            )
        raise InvalidArgument(
            "task must be a task definition (a function decorated with"
            f" @queue.task) or its name, got {task!r}."
        )

    def __repr__(self) -> str:
        return f"<QueueFixture {self.app.name} at {self.clock.now.isoformat()}>"


class _QueueClock(FakeClock):
    """The fixture's clock: moving it enqueues the periodic tasks' ticks."""

    def __init__(self, start: datetime.datetime, fixture: QueueFixture) -> None:
        super().__init__(start)
        self._fixture = fixture

    def _move(self, target: datetime.datetime, *, passing: bool) -> None:
        self._fixture._moved(self, target, passing=passing)


@pytest.fixture
def plainqueue(request: pytest.FixtureRequest) -> Iterator[QueueFixture]:
    """The queue of the app under test (your ``app`` fixture), on a clock that
    stands still until the test moves it; the real clock is back afterwards.

    .. versionadded:: 0.1
    """
    app = _app_under_test(request)
    queue = app.extensions["plainqueue"]
    if queue.embedded_worker(app) is not None:
        pytest.fail(
            "The 'plainqueue' fixture found the embedded worker running; it would"
            " run tasks on the real clock. Set TESTING = True in the test config"
            " so it does not start, or stop it with queue.stop_worker(app).",
            pytrace=False,
        )
    with QueueFixture(app, queue)._active() as fixture:
        yield fixture


def _app_under_test(request: pytest.FixtureRequest) -> Flask:
    from flask import Flask

    try:
        app = request.getfixturevalue("app")
    except pytest.FixtureLookupError:
        pytest.fail(
            "The 'plainqueue' fixture needs an 'app' fixture that returns the"
            " Flask app under test (as pytest-flask does). Define one, e.g. in"
            " conftest.py:\n\n"
            "    @pytest.fixture\n"
            "    def app(tmp_path):\n"
            "        app = create_app({'TESTING': True, 'SQLALCHEMY_DATABASE_URI':"
            " f'sqlite:///{tmp_path / \"test.db\"}'})\n"
            "        with app.app_context():\n"
            "            db.create_all()\n"
            "        return app",
            pytrace=False,
        )
    if not isinstance(app, Flask):
        pytest.fail(
            "The 'plainqueue' fixture needs the 'app' fixture to return a Flask"
            f" app, but it returned {app!r}.",
            pytrace=False,
        )
    if "plainqueue" not in app.extensions:
        pytest.fail(
            f"The app {app.name!r} of the 'app' fixture has no PlainQueue: call"
            " 'queue.init_app(app)' in the app factory (app.extensions has no"
            " 'plainqueue').",
            pytrace=False,
        )
    return app


def _aware(name: str, value: object) -> datetime.datetime:
    if not isinstance(value, datetime.datetime):
        raise InvalidArgument(f"{name} must be a datetime, got {value!r}.")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(
            f"{name} must be timezone-aware, e.g. datetime(2030, 1, 1,"
            f" tzinfo=timezone.utc); got the naive {value!r}."
        )
    return as_utc(value)


def _as_json(name: str, value: object) -> object:
    """``value`` as it reads back from JSON (tuples become lists)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{name} must be a JSON value: {exc}") from exc


def _decoded(info: TaskInfo) -> object:
    if info.data is None:
        return None
    try:
        return json.loads(info.data)
    except ValueError:
        return NOT_GIVEN  # unreadable: equal to nothing


def _expectation(name: str, data: object, count: int | _NotGiven, found: int) -> str:
    if count is NOT_GIVEN:
        what = f"a task {name!r}"
    elif count == 0:
        what = f"no task {name!r}"
    else:
        what = f"{count} task{'' if count == 1 else 's'} {name!r}"
    if data is not NOT_GIVEN:
        what += f" with data {json.dumps(data)}"
    return f"Expected {what} to be waiting, found {found}."


def _listing(waiting: list[TaskInfo], now: datetime.datetime) -> str:
    if not waiting:
        return "No tasks are waiting."
    lines = [f"Waiting tasks ({len(waiting)}):"]
    for info in waiting[:_SHOWN]:
        due = (info.run_at - now).total_seconds()
        when = "due now" if due <= 0 else f"due in {due:g}s"
        lines.append(f"  #{info.id} {info.name} data={info.data} ({when})")
    if len(waiting) > _SHOWN:
        lines.append(f"  ... and {len(waiting) - _SHOWN} more")
    return "\n".join(lines)
