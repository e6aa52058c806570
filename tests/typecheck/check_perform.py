"""Typed enqueue: what mypy checks in ``perform`` and ``perform_many``.

Type-checked, never run (``nox -s typing`` and plain ``mypy`` include it;
pytest does not collect it). Each line that must be an error carries
``# type: ignore[code]``; with ``warn_unused_ignores`` (on under ``strict``) a
line that stops being an error fails mypy, as does any other error.
tests/unit/test_typed_perform.py shows that removing a marker fails mypy.
"""

from __future__ import annotations

import typing as t

from flask_plainqueue import JSONValue
from flask_plainqueue import PlainQueue
from flask_plainqueue import TaskDefinition

queue = PlainQueue()


class Welcome(t.TypedDict):
    email: str


class Note(t.TypedDict, total=False):
    text: str


@queue.task
def welcome(data: Welcome) -> None: ...


@queue.task(name="count", batch_size=5, max_retries=2)
def count(n: int) -> int:
    return n


@queue.task
async def notify(data: Welcome) -> str:
    return data["email"]


@queue.periodic(every=None, cron="* * * * *")
def tick() -> None: ...


@queue.task(batch_size=5, queue="slow")
async def notify_many(data: list[Welcome]) -> None: ...


@queue.task
def not_json(data: set[int]) -> None: ...


@queue.task
def maybe(data: int | None = None) -> None: ...


@queue.task
def anything(data: JSONValue) -> None: ...


@queue.task
def note(data: Note) -> None: ...


@queue.task
def takes_none(data: object) -> None: ...


def issue_cases() -> None:
    # The misspelt key, through the queue, the definition and the function.
    queue.perform(welcome, {"emial": 3})  # type: ignore[arg-type]
    welcome.perform({"emial": 3})  # type: ignore[typeddict-item, typeddict-unknown-key]
    welcome({"emial": 3})  # type: ignore[typeddict-item, typeddict-unknown-key]
    count.perform("not an int")  # type: ignore[arg-type]
    queue.perform(count, "not an int")  # type: ignore[arg-type]
    queue.perform_many(count, ["a"])  # type: ignore[list-item]


def other_errors() -> None:
    # The examples of docs/tasks.rst's "Type checking".
    queue.perform(welcome, {"emial": "a@example.com"})  # type: ignore[arg-type]
    welcome.perform({"email": 3})  # type: ignore[typeddict-item]
    queue.perform_many(welcome, [{"email": "a@example.com"}, {}])  # type: ignore[list-item]
    welcome.perform()  # type: ignore[call-arg]
    queue.perform(welcome)  # type: ignore[arg-type]
    queue.perform_many(welcome, [{"email": 1}])  # type: ignore[list-item]
    notify.perform({"mail": "a"})  # type: ignore[typeddict-item, typeddict-unknown-key]
    tick.perform(3)  # type: ignore[arg-type]
    queue.perform(tick, {"x": 1})  # type: ignore[arg-type]
    queue.perform(3, None)  # type: ignore[call-overload]
    queue.perform(lambda data: None, 1)  # type: ignore[call-overload]
    # A function whose parameter is not JSON (a set) is refused by
    # queue.perform; not_json.perform({1, 2}) is not (mypy does not check a
    # type variable's bound when it is solved from a self type) and is left
    # to the TaskDataError at run time.
    queue.perform(not_json, {1, 2})  # type: ignore[call-overload]


def clean() -> None:
    queue.perform(welcome, {"email": "a@example.com"})
    queue.perform(welcome, {"email": "a@example.com"}, commit=False, delay=5)
    welcome.perform({"email": "a@example.com"}, priority=3)
    welcome({"email": "a@example.com"})
    welcome(data={"email": "a@example.com"})
    data: Welcome = {"email": "a@example.com"}
    queue.perform(welcome, data)
    queue.perform_many(welcome, [{"email": "a@example.com"}, data])
    queue.perform_many(welcome, (data for _ in range(3)), commit=False)
    count.perform(3)
    queue.perform(count, 3, unique_key="count:3")
    queue.perform_many(count, range(10))
    n: int = count(3)
    notify.perform({"email": "a@example.com"})
    queue.perform(notify, {"email": "a@example.com"})
    notify_many.perform([{"email": "a@example.com"}], delay=1)
    tick.perform()
    tick.perform(None)
    note.perform({})
    queue.perform(note, {"text": "hi"})
    queue.perform(tick)
    queue.perform(tick, None)
    maybe.perform()
    maybe.perform(None)
    maybe.perform(3)
    anything.perform({"a": [1, 2.5, None, {"b": True}]})
    takes_none.perform()
    # A name is looked up at run time; its data is any JSON value.
    queue.perform("count", "not checked")
    queue.perform_many("count", [1, "two"])
    definition: TaskDefinition[t.Any, t.Any] = count
    queue.perform(definition, [1])
    definition.perform({"any": "thing"})
    assert n == 3
