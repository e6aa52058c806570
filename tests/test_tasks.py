from __future__ import annotations

import pytest
from conftest import Env

from flask_plainqueue import ConfigurationError
from flask_plainqueue import DuplicateTaskName
from flask_plainqueue import PlainQueue
from flask_plainqueue import TaskDefinition


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
    assert queue.registry.get("emails.opt_in") is double_opt_in


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
    ],
)
def test_bad_options_are_errors(options: dict[str, object]) -> None:
    queue = PlainQueue()
    with pytest.raises(ConfigurationError):
        queue.task(**options)(lambda data: None)  # type: ignore[call-overload]


def test_async_function_is_detected() -> None:
    queue = PlainQueue()

    @queue.task
    async def fetch(data: object) -> None: ...

    assert fetch.is_async


def test_task_of_another_queue_is_refused(env: Env) -> None:
    other = PlainQueue()

    @other.task
    def elsewhere(data: object) -> None: ...

    with env.app.app_context(), pytest.raises(RuntimeError, match="another PlainQueue"):
        env.queue.perform(elsewhere)
