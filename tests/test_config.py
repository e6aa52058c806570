from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from conftest import create_test_app

from flask_plainqueue import ConfigurationError
from flask_plainqueue.config import DEFAULTS


def test_defaults_are_seeded_into_app_config(sqlite_uri: str, tmp_path: Path) -> None:
    app, _, _ = create_test_app(sqlite_uri, tmp_path)
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
        ("PLAINQUEUE_TABLE", "drop table; --"),
        ("PLAINQUEUE_SHUTDOWN_GRACE", -5),
    ],
)
def test_bad_values_name_the_key(
    sqlite_uri: str, tmp_path: Path, key: str, value: t.Any
) -> None:
    with pytest.raises(ConfigurationError, match=key):
        create_test_app(sqlite_uri, tmp_path, **{key: value})


def test_tasks_key_imports_modules(
    sqlite_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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

    create_test_app(sqlite_uri, tmp_path / "i", PLAINQUEUE_TASKS=["mytasks"])
    assert "mytasks.emails" in sys.modules
    assert "mytasks.sub.deep" in sys.modules
    for name in ["mytasks", "mytasks.emails", "mytasks.sub", "mytasks.sub.deep"]:
        monkeypatch.delitem(sys.modules, name)


def test_unimportable_task_module_is_a_clear_error(
    sqlite_uri: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="no_such_module"):
        create_test_app(sqlite_uri, tmp_path, PLAINQUEUE_TASKS=["no_such_module"])
