"""How the SQLite backend writes timestamps on its fast paths (no database):
the very text SQLAlchemy writes for the same instant in UTC."""

from __future__ import annotations

import datetime
import typing as t

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from flask_plainqueue.clock import as_utc
from flask_plainqueue.sqlite import utc_text

UTC = datetime.timezone.utc


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2026, 11, 28, 8, 6, 15, 123456, tzinfo=UTC),
        datetime.datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime.datetime(
            2026, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
        ),
    ],
)
def test_fast_path_timestamps_match_sqlalchemys(value: datetime.datetime) -> None:
    """The SQLite fast paths write timestamps themselves; they must be the very
    text SQLAlchemy writes for the instant in UTC (the queue's columns are plain
    ``DateTime(timezone=True)``), or comparisons between the two would go wrong."""
    dialect = sqlite.dialect()
    column = sa.DateTime(timezone=True)
    processor = column.dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    in_utc = value.astimezone(UTC)
    assert utc_text(value) == processor(in_utc)
    assert utc_text(value) == utc_text(in_utc)
    # Read back (naive, as SQLite returns it), it is the same instant in UTC.
    result = column.dialect_impl(dialect).result_processor(dialect, None)
    assert result is not None
    read = as_utc(t.cast(datetime.datetime, result(utc_text(value))))
    assert read == value and read.utcoffset() == datetime.timedelta(0)
    with pytest.raises(ValueError, match="naive"):
        utc_text(value.replace(tzinfo=None))


def test_as_utc() -> None:
    naive = datetime.datetime(2030, 1, 2, 3, 4, 5)
    assert as_utc(naive) == naive.replace(tzinfo=UTC)
    tokyo = datetime.datetime(
        2030, 1, 2, 12, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=9))
    )
    assert as_utc(tokyo) == datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert as_utc(tokyo).tzinfo is UTC
