"""``PLAINQUEUE_*`` settings, checked when the app is set up (no database is
opened)."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from conftest import create_test_app

from flask_plainqueue import ConfigurationError
from flask_plainqueue.config import DEFAULTS


def test_defaults_are_seeded_into_app_config(unopened_uri: str, tmp_path: Path) -> None:
    app, _, _ = create_test_app(unopened_uri, tmp_path)
    for key, value in DEFAULTS.items():
        if key != "PLAINQUEUE_LEASE_SECONDS":  # the test app sets it
            assert app.config[key] == value


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PLAINQUEUE_POLL_INTERVAL", 0),
        ("PLAINQUEUE_POLL_INTERVAL", "1"),
        ("PLAINQUEUE_LEASE_SECONDS", -1),
        ("PLAINQUEUE_EAGER", "yes"),
        ("PLAINQUEUE_EMBEDDED_WORKER", 1),
        ("PLAINQUEUE_TASKS", 5),
        ("PLAINQUEUE_CONCURRENCY", 0),
        ("PLAINQUEUE_SQLITE_SYNCHRONOUS", "SOMETIMES"),
        ("PLAINQUEUE_POSTGRESQL_SYNCHRONOUS_COMMIT", "NORMAL"),
        ("PLAINQUEUE_POSTGRESQL_SYNCHRONOUS_COMMIT", False),
        ("PLAINQUEUE_POSTGRESQL_SYNCHRONOUS_COMMIT", "off; DROP TABLE x"),
        ("PLAINQUEUE_TABLE", "drop table; --"),
        ("PLAINQUEUE_SHUTDOWN_GRACE", -5),
        # Ranges: a number that cannot be meant is refused, not clamped.
        ("PLAINQUEUE_POLL_INTERVAL", 3601),
        ("PLAINQUEUE_POLL_INTERVAL", float("nan")),
        ("PLAINQUEUE_POLL_INTERVAL", float("inf")),
        ("PLAINQUEUE_LEASE_SECONDS", 7 * 86400 + 1),
        ("PLAINQUEUE_CONCURRENCY", 257),
        ("PLAINQUEUE_CONCURRENCY", 2.0),
        ("PLAINQUEUE_CONCURRENCY", True),
        ("PLAINQUEUE_SHUTDOWN_GRACE", 86401),
        ("PLAINQUEUE_SQLITE_BUSY_TIMEOUT", -1),
        ("PLAINQUEUE_SQLITE_BUSY_TIMEOUT", 86401),
        ("PLAINQUEUE_KEEP_FAILED", 100 * 365 * 86400 + 1),
        ("PLAINQUEUE_KEEP_FAILED", "7d"),
        ("PLAINQUEUE_NOTIFY", "true"),
        ("PLAINQUEUE_TASKS", [""]),
        ("PLAINQUEUE_TASKS", ["ok", 5]),
        ("PLAINQUEUE_TABLE", "t" * 41),
        ("PLAINQUEUE_TABLE", "tâches"),
        ("PLAINQUEUE_TABLE", ""),
    ],
)
def test_bad_values_name_the_key(
    unopened_uri: str, tmp_path: Path, key: str, value: t.Any
) -> None:
    with pytest.raises(ConfigurationError, match=key):
        create_test_app(unopened_uri, tmp_path, **{key: value})


def test_values_at_the_limits_are_accepted(unopened_uri: str, tmp_path: Path) -> None:
    app, _, queue = create_test_app(
        unopened_uri,
        tmp_path,
        PLAINQUEUE_POLL_INTERVAL=3600,
        PLAINQUEUE_LEASE_SECONDS=7 * 86400,
        PLAINQUEUE_CONCURRENCY=256,
        PLAINQUEUE_SHUTDOWN_GRACE=0,
        PLAINQUEUE_KEEP_FAILED=100 * 365 * 86400,
        PLAINQUEUE_TABLE="t" * 40,
        PLAINQUEUE_SQLITE_SYNCHRONOUS="full",
        PLAINQUEUE_POSTGRESQL_SYNCHRONOUS_COMMIT="Remote_Write",
        PLAINQUEUE_TASKS="json.decoder",
    )
    settings = queue.settings(app)
    assert settings.poll_interval == 3600.0
    assert settings.concurrency == 256
    assert settings.table == "t" * 40
    assert settings.sqlite_synchronous == "FULL"
    assert settings.postgresql_synchronous_commit == "remote_write"
    assert settings.tasks == ("json.decoder",)
    assert queue.Task.__table__.name == "t" * 40


def test_settings_are_the_checked_values(unopened_uri: str, tmp_path: Path) -> None:
    app, _, queue = create_test_app(unopened_uri, tmp_path)
    settings = queue.settings(app)
    assert settings.lease_seconds == 30.0  # the test app's
    assert settings.poll_interval == DEFAULTS["PLAINQUEUE_POLL_INTERVAL"]
    assert settings.table == DEFAULTS["PLAINQUEUE_TABLE"]
    with app.app_context():
        assert queue.settings() is settings
    with pytest.raises(RuntimeError, match="outside of application context"):
        queue.settings()


def test_tasks_key_imports_modules(
    unopened_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "mytasks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "emails.py").write_text("IMPORTED = True\n")
    (pkg / "sub").mkdir()
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "deep.py").write_text("IMPORTED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys

    create_test_app(unopened_uri, tmp_path / "i", PLAINQUEUE_TASKS=["mytasks"])
    assert "mytasks.emails" in sys.modules
    assert "mytasks.sub.deep" in sys.modules
    for name in ["mytasks", "mytasks.emails", "mytasks.sub", "mytasks.sub.deep"]:
        monkeypatch.delitem(sys.modules, name)


def test_unimportable_task_module_is_a_clear_error(
    unopened_uri: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="no_such_module"):
        create_test_app(unopened_uri, tmp_path, PLAINQUEUE_TASKS=["no_such_module"])
