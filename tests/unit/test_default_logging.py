"""The logging default of :meth:`~flask_plainqueue.PlainQueue.init_app`: when
nothing handles the ``flask_plainqueue`` records, they go to Flask's default
handler at INFO; logging the app configured is left alone. Under real
servers: ``tests/processes/test_logging_servers.py``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from conftest import create_test_app
from flask.logging import default_handler

from flask_plainqueue.logs import log_like_the_app

PACKAGE = logging.getLogger("flask_plainqueue")


@contextlib.contextmanager
def bare_logging() -> Iterator[None]:
    """No handler on the root or package logger (as in a fresh process), and
    whatever was there back afterwards. Inside the test, not in a fixture:
    pytest adds its capture handlers to the root logger as each test starts."""
    root = logging.getLogger()
    saved = (root.handlers, PACKAGE.handlers, PACKAGE.level)
    root.handlers, PACKAGE.handlers = [], []
    PACKAGE.setLevel(logging.NOTSET)
    try:
        yield
    finally:
        root.handlers, PACKAGE.handlers = saved[0], saved[1]
        PACKAGE.setLevel(saved[2])


def test_unconfigured_records_go_to_flasks_handler_at_info(
    unopened_uri: str, tmp_path: Path
) -> None:
    with bare_logging():
        create_test_app(unopened_uri, tmp_path)
        assert PACKAGE.handlers == [default_handler]
        assert PACKAGE.getEffectiveLevel() == logging.INFO
        worker_logger = logging.getLogger("flask_plainqueue.worker")
        assert worker_logger.isEnabledFor(logging.INFO)
        # The one-line-per-task records stay off.
        assert not worker_logger.isEnabledFor(logging.DEBUG)
        # A second app adds no second handler.
        create_test_app(unopened_uri, tmp_path / "second")
        assert PACKAGE.handlers == [default_handler]


def test_a_root_handler_means_logging_is_configured() -> None:
    with bare_logging():
        handler = logging.NullHandler()
        logging.getLogger().addHandler(handler)
        log_like_the_app()
        assert PACKAGE.handlers == []
        assert PACKAGE.level == logging.NOTSET


def test_a_level_the_app_set_is_kept() -> None:
    with bare_logging():
        PACKAGE.setLevel(logging.DEBUG)
        log_like_the_app()
        assert PACKAGE.level == logging.DEBUG
        assert PACKAGE.handlers == [default_handler]


def test_a_handler_on_the_package_logger_is_kept() -> None:
    with bare_logging():
        handler = logging.NullHandler()
        PACKAGE.addHandler(handler)
        PACKAGE.setLevel(logging.WARNING)
        log_like_the_app()
        assert PACKAGE.handlers == [handler]
        assert PACKAGE.level == logging.WARNING
