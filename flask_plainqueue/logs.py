"""Where the queue's log records go when the app has not said: to Flask's
default handler, as ``app.logger``'s do, so a failing task is seen under
``flask run`` and gunicorn without any logging setup."""

from __future__ import annotations

import logging

from flask.logging import default_handler
from flask.logging import has_level_handler

#: The logger every module of the package logs under (``flask_plainqueue.*``).
PACKAGE_LOGGER = "flask_plainqueue"
#: Its level when the app has not set one: task failures (``ERROR``), problems
#: (``WARNING``) and the worker's start and stop (``INFO``) are shown; the
#: one-line-per-task records are ``DEBUG``, so the hot path never formats one.
DEFAULT_LEVEL = logging.INFO


def log_like_the_app() -> None:
    """Send the package's records to Flask's default handler, at
    :data:`DEFAULT_LEVEL`, unless logging was configured for them: a handler
    on the package logger or above it (the root logger's, say) that takes
    their level. A level the app set on the package logger is kept."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    if logger.level == logging.NOTSET:
        if has_level_handler(logger):
            return
        logger.setLevel(DEFAULT_LEVEL)
    if not has_level_handler(logger):
        logger.addHandler(default_handler)
