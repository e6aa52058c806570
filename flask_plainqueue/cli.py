"""The ``flask queue`` command group and ``flask queue work``.

The commands use only :class:`~flask_plainqueue.PlainQueue`'s public API; the
inspection and admin commands are in :mod:`.cli_tasks`, export and import in
:mod:`.cli_transfer`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import typing as t

import click
from flask import current_app
from flask.cli import AppGroup
from flask.logging import default_handler

from .cli_ops import add_ops_commands
from .cli_params import describe_missing_table
from .cli_params import errors_as_click
from .cli_periodic import add_periodic_commands
from .cli_tasks import add_task_commands
from .cli_transfer import add_transfer_commands

if t.TYPE_CHECKING:
    from flask import Flask

    from .extension import PlainQueue

logger = logging.getLogger(__name__)


def make_cli(queue: PlainQueue) -> AppGroup:
    """The ``flask queue`` group for ``queue``."""
    group = AppGroup("queue", help="Run and inspect the flask-plainqueue task queue.")

    @group.command("work")
    @click.option(
        "--concurrency",
        "-c",
        type=click.IntRange(min=1, max=256),
        default=None,
        help="Claim loops in this process (default PLAINQUEUE_CONCURRENCY).",
    )
    @click.option("--burst", is_flag=True, help="Exit 0 once nothing is due.")
    @click.option(
        "--queue",
        "-q",
        "queues",
        multiple=True,
        help="Only run tasks of this queue (repeatable; default all).",
    )
    @click.option(
        "--grace",
        type=click.FloatRange(min=0, max=86400),
        default=None,
        help="Seconds running tasks get to finish after SIGTERM/SIGINT"
        " (default PLAINQUEUE_SHUTDOWN_GRACE).",
    )
    @click.option(
        "--metrics-port",
        type=click.IntRange(min=1, max=65535),
        default=None,
        help="Serve this process's Prometheus metrics on this port (needs the"
        " prometheus extra).",
    )
    @click.option(
        "--metrics-host",
        default="127.0.0.1",
        show_default=True,
        help="The address --metrics-port listens on (0.0.0.0: every interface).",
    )
    @click.option(
        "--log-level",
        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
        default="INFO",
        show_default=True,
    )
    @errors_as_click
    def work(
        concurrency: int | None,
        burst: bool,
        queues: tuple[str, ...],
        grace: float | None,
        metrics_port: int | None,
        metrics_host: str,
        log_level: str,
    ) -> None:
        """Run a worker in this process until SIGTERM or SIGINT.

        On the first signal it stops claiming, lets running tasks finish within
        the grace period, hands back the rest for another worker, and exits 0.
        A second signal ends the grace period at once.
        """
        _configure_logging(log_level)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if queues:
            known = queue.registry.queues()
            unknown = sorted(set(queues) - known)
            if unknown:
                raise click.BadParameter(
                    f"no task is declared on queue(s) {', '.join(unknown)}; known"
                    f" queues: {', '.join(sorted(known)) or '(none)'}.",
                    param_hint="--queue",
                )
        if burst and not queue.tables_exist():
            # Without this, a burst worker finds nothing due and exits 0: a
            # deploy step that runs it would pass with no table at all.
            raise click.ClickException(describe_missing_table())
        if metrics_port is not None:
            _serve_metrics(queue, app, metrics_host, metrics_port)
        worker = queue.worker(app, concurrency=concurrency, queues=queues or None)
        on_signal = StopSignals(worker.stop, grace)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        try:
            worker.run(burst=burst)
        finally:
            queue.forget_worker(worker)
            # The handler stays: a signal now is ignored, as one for a
            # stopped worker should be, instead of killing the exiting process.
            on_signal.close()
        if worker.abandoned:
            # Threads of abandoned sync tasks cannot be killed, and the interpreter
            # would wait for them at exit; their rows are already handed back.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    add_task_commands(group, queue)
    add_transfer_commands(group, queue)
    add_periodic_commands(group, queue)
    add_ops_commands(group, queue)
    return group


def _serve_metrics(queue: PlainQueue, app: Flask, host: str, port: int) -> None:
    """Serve ``app``'s queue metrics from a daemon thread of this process: its
    counters count the attempts this worker runs, which no web process sees."""
    registry = queue.metrics_registry(app)  # ConfigurationError without the extra
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise click.ClickException(
            f"--metrics-port: cannot listen on {host}:{port} ({exc.strerror or exc})."
        ) from exc
    logger.info("Serving Prometheus metrics on http://%s:%d/", host, port)


def _configure_logging(level: str) -> None:
    package_logger = logging.getLogger("flask_plainqueue")
    package_logger.setLevel(level.upper())
    # A worker process logs lines with a timestamp and the logger's name, not
    # in the web format init_app borrowed from Flask for servers.
    if default_handler in package_logger.handlers:
        package_logger.removeHandler(default_handler)
    if not logging.getLogger().handlers and not package_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        package_logger.addHandler(handler)


class StopSignals:
    """The SIGTERM and SIGINT handler of ``flask queue work``: the first stops
    the worker with the grace period, any later one hands running tasks back
    now.

    Python runs a handler on the main thread between any two bytecodes, also
    while that thread holds a lock (a worker's, a logging handler's, the one
    inside ``Event.wait``) or is inside a handler already. Calling ``stop``
    there could block forever on a lock the interrupted code holds (seen: a
    process that no second SIGTERM could end). So the handler only records the
    signal and writes a byte to a pipe, neither of which takes a lock; a thread
    of its own reads the pipe and calls ``stop`` (and logs) in the order the
    signals came, like any other thread that waits its turn for a lock.

    :meth:`close` ends the thread; the handler then ignores signals.
    """

    def __init__(self, stop: t.Callable[[float | None], None], grace: float | None):
        self._stop = stop
        self._grace = grace
        # list.append is one step that neither a handler nor a thread interrupts.
        self._received: list[int] = []
        self._closed = False
        self._read, self._write = os.pipe()
        # A full pipe already holds a wake-up: the thread reads every recorded
        # signal when it wakes, so a handler never needs to wait to write.
        os.set_blocking(self._write, False)
        self._thread = threading.Thread(
            target=self._apply, name="plainqueue-signals", daemon=True
        )
        self._thread.start()

    def __call__(self, signum: int, frame: object = None) -> None:
        if self._closed:
            return
        self._received.append(signum)
        try:
            os.write(self._write, b"\0")
        except OSError:  # full (a wake-up is pending) or closed (no handler now)
            pass

    def close(self, timeout: float = 5.0) -> None:
        """Apply what was recorded, then end the thread (within ``timeout``);
        a signal after this is ignored."""
        if self._closed:
            return
        # Before the close: a handler must never write to the descriptor's
        # number once something else may have been given it.
        self._closed = True
        os.close(self._write)
        self._thread.join(timeout)

    def _apply(self) -> None:
        handled = 0
        try:
            while os.read(self._read, 512):  # b"" once close() closed the pipe
                while handled < len(self._received):
                    self._handle(self._received[handled], first=not handled)
                    handled += 1
        finally:
            os.close(self._read)

    def _handle(self, signum: int, *, first: bool) -> None:
        name = signal.Signals(signum).name
        try:
            if first:
                logger.info("%s received: finishing running tasks, then exiting", name)
                self._stop(self._grace)
            else:
                logger.info("%s received again: handing back running tasks now", name)
                self._stop(0)
        except Exception:  # a later signal must still be applied
            logger.exception("Stopping the worker on %s failed", name)
