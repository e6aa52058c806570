"""A fresh PostgreSQL database per measurement, on the server ``--pg-url`` names."""

from __future__ import annotations

import contextlib
import os
import typing as t
from collections.abc import Iterator

from .common import Skip


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://...`` (SQLAlchemy) as a plain libpq URL."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest


def with_database(url: str, name: str) -> str:
    base = url.split("?", 1)[0].rsplit("/", 1)[0]
    return f"{base}/{name}"


@contextlib.contextmanager
def fresh_database(url: str | None) -> Iterator[tuple[str, str]]:
    """Create an empty database and yield its (SQLAlchemy URL, libpq URL); drop it
    afterwards. Skips the measurement when there is no server."""
    if not url:
        raise Skip("no PostgreSQL URL (--pg-url or TEST_POSTGRESQL_URL)")
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a bench requirement
        raise Skip(f"psycopg is not installed: {exc}") from None
    name = f"bench_{os.getpid()}"
    admin = libpq_url(with_database(url, "postgres"))
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise Skip(f"PostgreSQL is not reachable: {str(exc).strip()}") from None
    with conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    sa_url = with_database(url, name)
    try:
        yield sa_url, libpq_url(sa_url)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connect(url: str, **kwargs: t.Any) -> t.Any:
    import psycopg

    return psycopg.connect(url, **kwargs)
