"""The embedded worker: its thread, and where it starts and stops (only in the
process ``flask run`` serves from, and at interpreter exit)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import click

from .worker import Worker

logger = logging.getLogger(__name__)


def serving_with_flask_run() -> bool:
    """Whether this process is the one ``flask run`` serves from: the reloader's
    child (``WERKZEUG_RUN_MAIN``), or the only process under ``--no-reload``.
    Other commands (``flask shell``, ``flask queue work``) and the reloader's
    watching parent start no worker."""
    from flask.cli import run_command

    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command is not run_command:
        return False
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return True
    reload = ctx.params.get("reload")
    if reload is None:
        from flask.helpers import get_debug_flag

        reload = get_debug_flag()
    return not reload


def exit_on_sigterm() -> None:
    """Make SIGTERM exit normally, so the worker is stopped at exit and hands back
    what it runs. Werkzeug's reloader does this for its child; under
    ``flask run --no-reload`` nothing would, and SIGTERM would kill the process
    with the worker's tasks still leased. A handler the app set is kept."""
    import signal
    import sys

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


def at_exit(func: Callable[[], object]) -> None:
    # threading's exit hooks run while the interpreter is still whole (before
    # atexit handlers and module teardown), so the worker can still write.
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(func)
            return
        except RuntimeError:  # the interpreter is already shutting down
            return
    import atexit

    atexit.register(func)


class WorkerThread(threading.Thread):
    """Runs a :class:`~flask_plainqueue.Worker` in a daemon thread (a greenlet
    under gevent's monkey-patching). Installs no signal handlers."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name="plainqueue-worker", daemon=True)
        self.worker = worker

    def run(self) -> None:
        try:
            self.worker.run()
        except BaseException:  # a daemon thread: nobody else would hear of it
            logger.exception("The embedded worker crashed")

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the worker and wait up to ``timeout`` seconds; returns whether the
        thread ended."""
        self.worker.stop(grace=timeout)
        self.join(None if timeout is None else timeout + 2)
        return not self.is_alive()
