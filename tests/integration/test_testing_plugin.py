"""The pytest plugin (``flask_plainqueue.testing``): small test files that use
the ``plainqueue`` fixture, run by ``pytester`` against a SQLite file and
PostgreSQL (issue 15, item 4). The fixture's clock must govern delays, retry
back-off, leases and periodic ticks on both databases."""

from __future__ import annotations

import textwrap
import typing as t
from importlib import metadata

import pytest
from helpers import child_env

pytest_plugins = ["pytester"]

#: The inner runs' conftest: an app fixture as a user writes one, on the
#: database given by PLUGIN_TEST_DATABASE_URI.
CONFTEST = """
from __future__ import annotations

import os

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import PlainQueue

db = SQLAlchemy()
queue = PlainQueue(db=db)
calls = []
answers = []


@queue.task(name="email", max_retries=2, retry_interval=30.0)
def email(data):
    answer = answers.pop(0) if answers else "ok"
    calls.append(("email", data))
    if answer == "down":
        raise ConnectionError("mail server down")


@queue.task(name="report", max_retries=0)
def report(data):
    calls.append(("report", data))
    if data == "bad":
        raise ValueError("bad report")


@pytest.fixture
def bare_app():
    app = Flask("innerapp")
    app.config.update(
        TESTING=True,
        SQLALCHEMY_DATABASE_URI=os.environ["PLUGIN_TEST_DATABASE_URI"],
        PLAINQUEUE_LEASE_SECONDS=30,
    )
    db.init_app(app)
    queue.init_app(app)
    calls.clear()
    answers.clear()
    with app.app_context():
        db.drop_all()
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


@pytest.fixture
def app(bare_app):
    with bare_app.app_context():
        yield bare_app
"""


@pytest.fixture
def run_inner(
    database_uri: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> t.Callable[[str], pytest.RunResult]:
    """Run a test file that uses the fixture against ``database_uri``.

    ``database_uri`` comes before ``pytester``, which drops the modules
    imported after it from ``sys.modules`` when it ends: SQLAlchemy's
    PostgreSQL dialect imported again warns (an error here).
    """
    monkeypatch.setenv("PLUGIN_TEST_DATABASE_URI", database_uri)
    pytester.makeini("[pytest]\nfilterwarnings =\n    error\n")
    pytester.makeconftest(CONFTEST)

    def run(source: str) -> pytest.RunResult:
        pytester.makepyfile(test_inner=textwrap.dedent(source))
        return _run(pytester, monkeypatch)

    return run


def _run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> pytest.RunResult:
    # In a process of its own: an in-process run forgets the modules it
    # imported, and importing SQLAlchemy's dialects again warns. This
    # checkout's package first, where an installed one points elsewhere.
    monkeypatch.setenv("PYTHONPATH", child_env()["PYTHONPATH"])
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    plugins = {ep.name: ep.value for ep in metadata.entry_points(group="pytest11")}
    assert plugins.get("plainqueue") == "flask_plainqueue.testing", (
        "flask-plainqueue's pytest11 entry point is not installed: run"
        " 'pip install -e .' again after changing setup.cfg's entry points."
    )


def test_enqueued_and_assert_enqueued(run_inner: t.Any) -> None:
    result = run_inner(
        """
        from conftest import email, report

        def test_waiting_tasks(plainqueue):
            first = email.perform("a@example.com")
            report.perform("r1", priority=5)
            later = email.perform(("b", 1), delay=60)
            report.perform("bad")
            assert plainqueue.run("report") == 2  # r1 done, "bad" dead

            # Dead and finished tasks are not waiting; claim order otherwise.
            assert [i.id for i in plainqueue.enqueued()] == [first, later]
            assert [i.id for i in plainqueue.enqueued("email")] == [first, later]
            assert plainqueue.enqueued(report) == []

            (info,) = plainqueue.assert_enqueued(email, data="a@example.com")
            assert info.id == first
            # data compares as JSON: the tuple was stored as a list.
            plainqueue.assert_enqueued("email", data=["b", 1], count=1)
            plainqueue.assert_enqueued(email, count=2)
            plainqueue.assert_enqueued(email, data="nobody", count=0)
            plainqueue.assert_enqueued(report, count=0)

        def test_missing_data(plainqueue):
            email.perform("a@example.com")
            report.perform("r1", delay=90)
            plainqueue.assert_enqueued(email, data="b@example.com")

        def test_wrong_count(plainqueue):
            email.perform("a@example.com")
            email.perform("a@example.com")
            plainqueue.assert_enqueued("email", data="a@example.com", count=1)

        def test_nothing_waiting(plainqueue):
            plainqueue.assert_enqueued(report)
        """
    )
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: Expected a task 'email' with data \"b@example.com\""
            " to be waiting, found 0.",
            "*Waiting tasks (2):",
            '*  #* email data="a@example.com" (due now)',
            '*  #* report data="r1" (due in 90s)',
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: Expected 1 task 'email' with data \"a@example.com\""
            " to be waiting, found 2.",
            "*Waiting tasks (2):",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: Expected a task 'report' to be waiting, found 0.",
            "*No tasks are waiting.",
        ]
    )


def test_run_runs_only_the_given_task(run_inner: t.Any) -> None:
    result = run_inner(
        """
        import conftest
        from conftest import email, queue, report

        def test_run_one_task(plainqueue):
            email.perform("e1")
            report.perform("r1")
            report.perform("r2")

            assert plainqueue.run(report) == 2
            assert conftest.calls == [("report", "r1"), ("report", "r2")]
            plainqueue.assert_enqueued(email, data="e1", count=1)

            assert plainqueue.run() == 1  # everything due
            assert conftest.calls[-1] == ("email", "e1")
            assert plainqueue.enqueued() == []
            # The same through the queue, by name.
            report.perform("r3")
            email.perform("e2")
            with plainqueue.app.app_context():
                assert queue.drain("report") == 1
            plainqueue.assert_enqueued(email, count=1)
        """
    )
    result.assert_outcomes(passed=1)


def test_a_delayed_task_is_due_only_after_the_clock_moves(run_inner: t.Any) -> None:
    result = run_inner(
        """
        import datetime

        import conftest
        from conftest import email, report

        def test_delay(plainqueue):
            start = plainqueue.clock.now
            assert start.tzinfo == datetime.timezone.utc
            email.perform("later", delay=60)
            report.perform("at", run_at=start + datetime.timedelta(hours=2))

            assert plainqueue.run() == 0
            assert plainqueue.clock.advance(59.5) == start + datetime.timedelta(
                seconds=59.5
            )
            assert plainqueue.run() == 0
            assert plainqueue.clock.now == start + datetime.timedelta(seconds=59.5)
            plainqueue.clock.advance(0.5)
            assert plainqueue.run() == 1
            assert conftest.calls == [("email", "later")]

            plainqueue.clock.advance(datetime.timedelta(hours=2))
            assert plainqueue.run() == 1
            assert conftest.calls[-1] == ("report", "at")
        """
    )
    result.assert_outcomes(passed=1)


def test_a_failed_task_is_retried_after_its_retry_interval(run_inner: t.Any) -> None:
    result = run_inner(
        """
        import conftest
        from conftest import email

        def test_retry(plainqueue):
            conftest.answers[:] = ["down"]
            email.perform("x")

            assert plainqueue.run() == 1  # failed; retried in 30 s
            (info,) = plainqueue.enqueued(email)
            assert info.failed_nr == 1
            assert "mail server down" in info.error
            assert (info.run_at - plainqueue.clock.now).total_seconds() == 30

            plainqueue.clock.advance(29)
            assert plainqueue.run() == 0
            plainqueue.clock.advance(1)
            assert plainqueue.run() == 1
            assert conftest.calls == [("email", "x"), ("email", "x")]
            assert plainqueue.enqueued() == []
        """
    )
    result.assert_outcomes(passed=1)


def test_periodic_ticks_come_with_the_clock(run_inner: t.Any) -> None:
    result = run_inner(
        """
        import datetime

        import pytest

        import conftest
        from conftest import queue
        from flask_plainqueue import InvalidArgument

        @queue.periodic(
            every=datetime.timedelta(minutes=5), name="tidy", catch_up=False
        )
        def tidy():
            conftest.calls.append(("tidy", None))

        @queue.periodic(every=datetime.timedelta(hours=1), name="hourly")
        def hourly():
            conftest.calls.append(("hourly", None))

        START = datetime.datetime(2030, 1, 1, 0, 2, tzinfo=datetime.timezone.utc)

        def test_ticks_passed_by_advance(plainqueue):
            plainqueue.clock.set(START)  # the test starts at 00:02
            assert plainqueue.run() == 0  # a new schedule waits for its next tick
            plainqueue.clock.advance(datetime.timedelta(minutes=5))
            # The tick at 00:05 passed: enqueued on time, although tidy does
            # not catch up.
            plainqueue.assert_enqueued(tidy, count=1)
            plainqueue.assert_enqueued(hourly, count=0)
            assert plainqueue.run() == 1
            assert conftest.calls == [("tidy", None)]

            plainqueue.clock.advance(datetime.timedelta(minutes=15))  # to 00:22
            plainqueue.assert_enqueued("tidy", count=3)
            assert plainqueue.run("tidy") == 3

            # 40 days of 5-minute ticks is too many to pass one by one: refused
            # before anything moves.
            before = plainqueue.clock.now
            with pytest.raises(InvalidArgument, match="more than 10000 ticks"):
                plainqueue.clock.advance(datetime.timedelta(days=40))
            assert plainqueue.clock.now == before
            assert plainqueue.enqueued() == []

        def test_a_jump_is_a_worker_that_was_down(plainqueue):
            plainqueue.clock.set(START)
            assert plainqueue.run() == 0
            plainqueue.clock.set(START + datetime.timedelta(hours=3))  # 03:02
            # Missed ticks: tidy (catch_up=False) skips them; hourly runs
            # once, not once per missed tick.
            plainqueue.assert_enqueued(tidy, count=0)
            plainqueue.assert_enqueued(hourly, count=1)
            assert plainqueue.run() == 1
            assert conftest.calls == [("hourly", None)]
        """
    )
    result.assert_outcomes(passed=2)


def test_an_expired_lease_is_claimable_after_the_clock_moves(
    run_inner: t.Any,
) -> None:
    result = run_inner(
        """
        import datetime

        import conftest
        from conftest import email, queue
        from flask_plainqueue.claims import ClaimRequest

        def test_lease(plainqueue):
            task_id = email.perform("x")
            now = plainqueue.clock.now
            # A worker claims it under a 30 s lease and dies.
            with plainqueue.app.app_context():
                (claimed,) = queue.store().claim(
                    ClaimRequest(
                        owner="crashed-worker",
                        names=["email"],
                        batch_sizes={"email": 1},
                        now=now,
                        until=now + datetime.timedelta(seconds=30),
                    )
                )
            assert claimed.id == task_id
            assert plainqueue.enqueued() == []  # running, not waiting
            assert plainqueue.run() == 0

            plainqueue.clock.advance(29)
            assert plainqueue.run() == 0
            plainqueue.clock.advance(1)
            (info,) = plainqueue.enqueued()  # waiting again
            assert info.lease_owner == "crashed-worker"
            assert plainqueue.run() == 1
            assert conftest.calls == [("email", "x")]
        """
    )
    result.assert_outcomes(passed=1)


def test_the_real_clock_is_back_after_the_test(run_inner: t.Any) -> None:
    result = run_inner(
        """
        import pytest

        from conftest import queue

        @pytest.fixture
        def real_clock(app):
            store = queue.store(app)
            real = store.clock
            yield real
            assert store.clock is real

        def test_clock(real_clock, plainqueue):
            assert queue.store(plainqueue.app).clock is plainqueue.clock
            assert real_clock is not plainqueue.clock
        """
    )
    result.assert_outcomes(passed=1)


def test_without_an_app_context_each_call_pushes_one(run_inner: t.Any) -> None:
    result = run_inner(
        """
        import pytest
        from flask import has_app_context

        import conftest
        from conftest import email, queue

        @pytest.fixture
        def app(bare_app):
            return bare_app

        def test_no_context(plainqueue):
            assert not has_app_context()
            with plainqueue.app.app_context():
                email.perform("x", delay=5)
            plainqueue.assert_enqueued(email, data="x")
            plainqueue.clock.advance(5)
            assert plainqueue.run() == 1
            assert conftest.calls == [("email", "x")]
            assert plainqueue.enqueued() == []
            assert not has_app_context()
        """
    )
    result.assert_outcomes(passed=1)


def test_bad_arguments_name_the_fix(run_inner: t.Any) -> None:
    result = run_inner(
        """
        import datetime

        import pytest

        from flask_plainqueue import InvalidArgument, UnknownTask, PlainQueue
        from conftest import email

        def test_arguments(plainqueue):
            with pytest.raises(UnknownTask, match="'emial'"):
                plainqueue.enqueued("emial")
            other = PlainQueue()

            @other.task(name="email")
            def other_email(data):
                pass

            with pytest.raises(InvalidArgument, match="not registered with"):
                plainqueue.assert_enqueued(other_email)
            with pytest.raises(InvalidArgument, match="task definition"):
                plainqueue.run(42)
            with pytest.raises(InvalidArgument, match="count must be"):
                plainqueue.assert_enqueued(email, count=-1)
            with pytest.raises(InvalidArgument, match="data must be a JSON value"):
                plainqueue.assert_enqueued(email, data={1, 2})
            with pytest.raises(InvalidArgument, match="seconds must be"):
                plainqueue.clock.advance(-1)
            with pytest.raises(InvalidArgument, match="timezone-aware"):
                plainqueue.clock.set(datetime.datetime(2030, 1, 1))
        """
    )
    result.assert_outcomes(passed=1)


def test_without_an_app_fixture_the_error_names_the_fix(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_inner="""
        def test_it(plainqueue):
            pass
        """
    )
    result = _run(pytester, monkeypatch)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*The 'plainqueue' fixture needs an 'app' fixture that returns the"
            " Flask app under test*",
            "*def app(tmp_path):*",
        ]
    )


def test_an_app_without_plainqueue_is_refused(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_inner="""
        import pytest
        from flask import Flask

        @pytest.fixture
        def app():
            return Flask("bare")

        def test_it(plainqueue):
            pass
        """
    )
    result = _run(pytester, monkeypatch)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*The app 'bare' of the 'app' fixture has no PlainQueue: call"
            " 'queue.init_app(app)'*"
        ]
    )


def test_a_project_that_does_not_use_it_pays_nothing_for_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nfilterwarnings =\n    error\n")
    pytester.makepyfile(
        test_inner="""
        import sys

        def test_plain(pytestconfig):
            assert pytestconfig.pluginmanager.has_plugin("plainqueue")
            heavy = {"flask", "flask_sqlalchemy", "sqlalchemy", "werkzeug"}
            assert sorted(heavy & set(sys.modules)) == []
        """
    )
    result = _run(pytester, monkeypatch)
    result.assert_outcomes(passed=1)
