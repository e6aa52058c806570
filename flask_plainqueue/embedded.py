"""Where the embedded worker starts and stops: only in the process ``flask run``
serves from, and at interpreter exit."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import click


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
