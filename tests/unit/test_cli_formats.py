"""What ``flask queue`` parses and prints without a database: durations, task
ids, ages and error summaries."""

from __future__ import annotations

import traceback

import click
import pytest

from flask_plainqueue.cli_params import parse_duration
from flask_plainqueue.cli_params import TaskIdType
from flask_plainqueue.info import error_summary
from flask_plainqueue.info import format_age
from flask_plainqueue.info import parse_id
from flask_plainqueue.info import valid_id


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("2h", 7200),
        ("7d", 604800),
        ("1w", 604800),
        ("90", 90),
        ("0s", 0),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7x", "-1d", "d", "1.d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(click.BadParameter, match="e.g. 30s, 15m, 2h, 7d"):
        parse_duration(text)


def test_parse_duration_refuses_over_a_hundred_years() -> None:
    assert parse_duration(f"{100 * 365}d") == 100 * 365 * 86400
    with pytest.raises(click.BadParameter, match="longer than 100 years"):
        parse_duration(f"{100 * 365 + 1}d")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        (" 42 ", 42),
        (str(2**63 - 1), 2**63 - 1),
        ("0", None),
        ("-1", None),
        ("abc", None),
        ("1.0", None),
        ("", None),
        ("٣", None),  # a digit, but not ASCII
        (str(2**63), None),  # past a bigint
        ("1" * 20, None),
    ],
)
def test_parse_id(text: str, expected: int | None) -> None:
    assert parse_id(text) == expected


@pytest.mark.parametrize("value", [True, "1", 1.0, None, 0, -5, 2**63])
def test_valid_id_refuses_what_cannot_be_an_id(value: object) -> None:
    assert valid_id(value) is None


def test_task_id_parameter() -> None:
    param = TaskIdType()
    assert param.convert("17", None, None) == 17
    assert param.convert(17, None, None) == 17
    with pytest.raises(click.BadParameter, match="'x1' is not a task id"):
        param.convert("x1", None, None)


def test_format_age() -> None:
    assert format_age(0) == "0s"
    assert format_age(5) == "5s"
    assert format_age(185) == "3m 5s"
    assert format_age(7260) == "2h 1m"
    assert format_age(3 * 86400) == "3d"
    assert format_age(3 * 86400 + 4 * 3600) == "3d 4h"


def test_error_summary_is_the_exception_line() -> None:
    try:
        raise ValueError("first\nsecond")
    except ValueError as exc:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert error_summary(text) == "ValueError: first"
    assert error_summary(None) == ""
    assert error_summary("plain message") == "plain message"
