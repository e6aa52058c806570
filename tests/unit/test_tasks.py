"""Task definitions: ``@queue.task``, its name and options, checked when the
function is decorated (no database)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from conftest import create_test_app

from flask_plainqueue import ConfigurationError
from flask_plainqueue import DuplicateTaskName
from flask_plainqueue import PlainQueue
from flask_plainqueue import TaskDefinition
from flask_plainqueue import TaskOptions
from flask_plainqueue import UnknownTask


def test_bare_decorator_and_default_name() -> None:
    queue = PlainQueue()

    @queue.task
    def cleanup(data: object) -> str:
        return "done"

    assert isinstance(cleanup, TaskDefinition)
    assert (
        cleanup.name
        == f"{__name__}.test_bare_decorator_and_default_name.<locals>.cleanup"
    )
    assert cleanup(None) == "done"  # a direct call runs the function
    assert cleanup.options.batch_size == 1
    assert cleanup.options.max_retries == 5
    assert cleanup.options.retry_interval == 3.0


def test_options_and_explicit_name() -> None:
    queue = PlainQueue()

    def ok(data: object) -> None: ...
    def bad(data: object, error: BaseException) -> None: ...

    @queue.task(
        name="emails.opt_in",
        batch_size=5,
        success=ok,
        failure=bad,
        max_retries=2,
        retry_interval=0.5,
    )
    def double_opt_in(data: dict[str, str]) -> None: ...

    assert double_opt_in.name == "emails.opt_in"
    assert double_opt_in.success is ok and double_opt_in.failure is bad
    assert double_opt_in.options.batch_size == 5
    assert double_opt_in.options.max_retries == 2
    assert double_opt_in.options.retry_interval == 0.5
    assert queue.registry.get("emails.opt_in") is double_opt_in
    assert queue.registry.names() == ["emails.opt_in"]
    with pytest.raises(UnknownTask, match="'emails.other'"):
        queue.registry.get("emails.other")


def test_options_are_a_checked_dataclass() -> None:
    queue = PlainQueue()

    @queue.task(
        queue="emails",
        priority=-3,
        retry_on=KeyError,
        retry_max_delay=7200,
        timeout=1,
        batch_size=1000,
        retry_jitter=10,
        retry_backoff=100,
    )
    def send(data: object) -> None: ...

    options = send.options
    assert isinstance(options, TaskOptions)
    assert options.queue == "emails" and options.priority == -3
    assert options.retry_on == (KeyError,)
    assert options.retry_max_delay == 7200.0
    assert options.timeout == 1.0 and isinstance(options.timeout, float)
    assert (options.batch_size, options.retry_jitter, options.retry_backoff) == (
        1000,
        10.0,
        100.0,
    )
    assert queue.registry.queues() == {"emails"}
    with pytest.raises(ConfigurationError, match="batch_size"):
        TaskOptions(batch_size=0)


def test_duplicate_name_is_an_error_at_decoration() -> None:
    queue = PlainQueue()

    @queue.task(name="same")
    def one(data: object) -> None: ...

    with pytest.raises(DuplicateTaskName, match="same"):

        @queue.task(name="same")
        def two(data: object) -> None: ...


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 0},
        {"max_retries": -1},
        {"retry_interval": -1},
        {"poll_interval": 0},
        {"retry_backoff": 0.5},
        {"success": "not callable"},
        {"retry_on": ("ValueError",)},
        # Ranges and types: refused at decoration, naming the option.
        {"batch_size": 1001},
        {"batch_size": 2.0},
        {"batch_size": True},
        {"retry_jitter": -0.1},
        {"retry_jitter": 10.5},
        {"retry_backoff": 101},
        {"retry_interval": 100 * 365 * 86400 + 1},
        {"retry_interval": float("nan")},
        {"retry_max_delay": float("inf")},
        {"timeout": 0},
        {"timeout": datetime.timedelta(days=365 * 101)},
        {"poll_interval": 3601},
        {"priority": 2**31},
        {"max_retries": 2**31},
        {"queue": ""},
        {"queue": "q" * 101},
        {"atomic": 1},
        {"name": ""},
        {"name": 5},
        {"name": "bad\x00name"},
        {"name": "n" * 256},
        {"failure": 5},
        {"retry_on": ()},
        {"no_such_option": 1},
    ],
)
def test_bad_options_are_errors(options: dict[str, object]) -> None:
    queue = PlainQueue()
    (key,) = options
    with pytest.raises(ConfigurationError, match=key):
        queue.task(**options)(lambda data: None)  # type: ignore[call-overload]
    assert len(queue.registry) == 0


def test_async_function_is_detected() -> None:
    queue = PlainQueue()

    @queue.task
    async def fetch(data: object) -> None: ...

    assert fetch.is_async


def test_task_of_another_queue_is_refused(unopened_uri: str, tmp_path: Path) -> None:
    app, _, queue = create_test_app(unopened_uri, tmp_path)
    other = PlainQueue()

    @other.task
    def elsewhere(data: object) -> None: ...

    # Refused before anything is written (the database is never opened).
    with app.app_context(), pytest.raises(RuntimeError, match="another PlainQueue"):
        queue.perform(elsewhere)
