"""The ``flask queue`` command group."""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import re
import signal
import sys
import threading
import typing as t
from collections.abc import Callable
from collections.abc import Sequence

import click
from flask import current_app
from flask.cli import AppGroup

from . import inspection
from .exceptions import PlainQueueError
from .inspection import format_age
from .inspection import STATES
from .inspection import TaskInfo
from .models import TaskState
from .transfer import add_commands as add_transfer_commands

if t.TYPE_CHECKING:
    from .extension import PlainQueue
    from .storage import Storage

logger = logging.getLogger(__name__)


def make_cli(queue: PlainQueue) -> AppGroup:
    """The ``flask queue`` group for ``queue``."""
    group = AppGroup("queue", help="Run and inspect the flask-plainqueue task queue.")

    @group.command("work")
    @click.option(
        "--concurrency",
        "-c",
        type=click.IntRange(min=1),
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
        type=click.FloatRange(min=0),
        default=None,
        help="Seconds running tasks get to finish after SIGTERM/SIGINT"
        " (default PLAINQUEUE_SHUTDOWN_GRACE).",
    )
    @click.option(
        "--log-level",
        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
        default="INFO",
        show_default=True,
    )
    def work(
        concurrency: int | None,
        burst: bool,
        queues: tuple[str, ...],
        grace: float | None,
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
            known = {d.options.queue for d in queue.registry}
            unknown = sorted(set(queues) - known)
            if unknown:
                raise click.BadParameter(
                    f"no task is declared on queue(s) {', '.join(unknown)}; known"
                    f" queues: {', '.join(sorted(known)) or '(none)'}.",
                    param_hint="--queue",
                )
        worker = queue.worker(app, concurrency=concurrency, queues=queues or None)
        signals_seen = 0

        def on_signal(signum: int, frame: object) -> None:
            nonlocal signals_seen
            signals_seen += 1
            name = signal.Signals(signum).name
            if signals_seen == 1:
                logger.info("%s received: finishing running tasks, then exiting", name)
                worker.stop(grace)
            else:
                logger.info("%s received again: handing back running tasks now", name)
                worker.stop(0)

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        try:
            worker.run(burst=burst)
        finally:
            queue.forget_worker(worker)
        if worker.abandoned:
            # Threads of abandoned sync tasks cannot be killed, and the interpreter
            # would wait for them at exit; their rows are already handed back.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    _add_inspection_commands(group, queue)
    add_transfer_commands(group, queue)
    return group


def _configure_logging(level: str) -> None:
    package_logger = logging.getLogger("flask_plainqueue")
    package_logger.setLevel(level.upper())
    if not logging.getLogger().handlers and not package_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        package_logger.addHandler(handler)


# -- inspection and admin commands --------------------------------------------

_STATE_COLOURS = {
    TaskState.PENDING: "cyan",
    TaskState.SCHEDULED: "blue",
    TaskState.RUNNING: "green",
    TaskState.DEAD: "red",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
F = t.TypeVar("F", bound=Callable[..., t.Any])


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration such as ``30s``, ``15m``, ``2h``, ``7d`` (or plain seconds)."""

    name = "duration"

    def convert(
        self, value: t.Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        match = _DURATION.match(str(value).lower())
        if match is None:
            self.fail(
                f"{value!r} is not a duration; use a number with s, m, h, d or w,"
                " e.g. 30s, 15m, 2h, 7d.",
                param,
                ctx,
            )
        return float(match.group(1)) * _UNITS[match.group(2)]


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``30s``, ``15m``, ``2h`` or ``7d``.

    :raises click.BadParameter: it is not one.
    """
    return Duration().convert(text, None, None)


def _when(value: datetime.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _storage(queue: PlainQueue) -> Storage:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return queue._state(app).storage


def _errors_as_click(func: F) -> F:
    """Report a :class:`PlainQueueError` as a click error (exit 1, no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return func(*args, **kwargs)
        except PlainQueueError as exc:
            raise click.ClickException(str(exc)) from exc

    return t.cast(F, wrapper)


def _table(rows: Sequence[Sequence[str]], styles: Sequence[str | None] = ()) -> None:
    """Echo rows as left-aligned columns; the first row is the header.

    ``styles`` gives a colour per data row for the state column (index 2).
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        cells = []
        for col, cell in enumerate(row):
            text = cell.ljust(widths[col]) if col < len(row) - 1 else cell
            if index == 0:
                text = click.style(text, bold=True)
            elif col == 2 and index - 1 < len(styles) and styles[index - 1]:
                text = click.style(text, fg=styles[index - 1])
            cells.append(text)
        click.echo("  ".join(cells).rstrip())


def _state_option_values(
    failed: bool, states: tuple[str, ...]
) -> list[TaskState] | None:
    chosen = [TaskState(s) for s in states]
    if failed:
        chosen.append(TaskState.DEAD)
    return sorted(set(chosen), key=STATES.index) or None


def _describe(info: TaskInfo) -> str:
    return f"task {info.id} ({info.name})"


def _add_inspection_commands(group: AppGroup, queue: PlainQueue) -> None:
    @group.command("status", short_help="Counts per task and state, oldest due task.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
    @_errors_as_click
    def status(as_json: bool) -> None:
        """Counts per task name and state, the oldest due task's wait, and the
        workers running tasks now."""
        result = inspection.status(_storage(queue))
        if as_json:
            click.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True))
            return
        if not result.counts:
            click.echo("The queue is empty.")
        else:
            header = ["TASK", *(s.value.upper() for s in STATES)]
            rows = [header]
            for name, counts in result.counts.items():
                rows.append([name, *(str(counts[s]) for s in STATES)])
            totals = result.totals
            rows.append(["(total)", *(str(totals[s]) for s in STATES)])
            widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
            for index, row in enumerate(rows):
                line = "  ".join(
                    cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                    for i, cell in enumerate(row)
                )
                click.echo(click.style(line, bold=True) if index == 0 else line)
        click.echo("")
        if result.oldest_pending_age is None:
            click.echo("Oldest pending: none (nothing is due)")
        else:
            click.echo(
                f"Oldest pending: {format_age(result.oldest_pending_age)}"
                f" (task {result.oldest_pending_id})"
            )
        if result.workers:
            click.echo("Workers running tasks now:")
            for owner, n in result.workers.items():
                click.echo(f"  {owner}  {n} task{'s' if n != 1 else ''}")
        else:
            click.echo("Workers running tasks now: none")

    @group.command("list", short_help="One line per task, with its last error.")
    @click.option("--failed", is_flag=True, help="Only dead tasks (out of retries).")
    @click.option(
        "--state",
        "states",
        multiple=True,
        type=click.Choice([s.value for s in STATES]),
        help="Only tasks in this state (repeatable).",
    )
    @click.option("--name", default=None, help="Only tasks of this task name.")
    @click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=50,
        show_default=True,
        help="Show at most this many.",
    )
    @_errors_as_click
    def list_(
        failed: bool, states: tuple[str, ...], name: str | None, limit: int
    ) -> None:
        """One line per task: id, name, state, attempts, due (or created) and
        the first line of its last error."""
        storage = _storage(queue)
        now = inspection.utcnow()
        chosen = _state_option_values(failed, states)
        tasks = inspection.list_tasks(
            storage, states=chosen, name=name, limit=limit, now=now
        )
        if not tasks:
            click.echo("No tasks.")
            return
        rows = [["ID", "NAME", "STATE", "ATTEMPTS", "DUE/CREATED", "LAST ERROR"]]
        styles: list[str | None] = []
        for info in tasks:
            when = (
                info.run_at
                if info.state in (TaskState.PENDING, TaskState.SCHEDULED)
                else info.created
            )
            error = info.error_summary
            if len(error) > 80:
                error = error[:79] + "…"
            rows.append(
                [
                    info.id,
                    info.name,
                    info.state.value,
                    str(info.attempts),
                    _when(when),
                    error,
                ]
            )
            styles.append(_STATE_COLOURS[info.state])
        _table(rows, styles)
        total = inspection.count_tasks(storage, states=chosen, name=name, now=now)
        if total > len(tasks):
            click.echo(f"({len(tasks)} of {total} shown; use --limit to see more)")

    list_.name = "list"

    @group.command("show")
    @click.argument("task_id", metavar="ID")
    @_errors_as_click
    def show(task_id: str) -> None:
        """Everything about one task: its fields, data and full traceback."""
        info = inspection.get_task(_storage(queue), task_id)
        if info is None:
            click.echo(f"No task {task_id}.", err=True)
            raise click.exceptions.Exit(1)
        fields = [
            ("id", info.id),
            ("name", info.name),
            ("state", click.style(info.state.value, fg=_STATE_COLOURS[info.state])),
            ("queue", info.queue),
            ("priority", str(info.priority)),
            ("created", _when(info.created)),
            ("run at", _when(info.run_at)),
            ("attempts", str(info.attempts)),
            ("failures", str(info.failed_nr)),
            ("failed last", _when(info.failed_last)),
            ("lease owner", info.lease_owner or "-"),
            ("unique key", info.unique_key or "-"),
        ]
        width = max(len(label) for label, _ in fields)
        for label, value in fields:
            click.echo(f"{label.ljust(width)}  {value}")
        click.echo("")
        click.echo(click.style("data:", bold=True))
        click.echo(info.data_pretty)
        if info.error:
            click.echo("")
            click.echo(click.style("last error:", bold=True))
            click.echo(info.error.rstrip("\n"))

    @group.command("retry", short_help="Run tasks again now (IDs or --all-failed).")
    @click.argument("task_ids", metavar="[ID]...", nargs=-1)
    @click.option("--all-failed", is_flag=True, help="Retry every dead task.")
    @click.option(
        "--name", default=None, help="With --all-failed: only this task name."
    )
    @click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
    @_errors_as_click
    def retry(
        task_ids: tuple[str, ...], all_failed: bool, name: str | None, yes: bool
    ) -> None:
        """Make tasks due now with their failure count reset: the given IDs, or
        every dead task (of one name) with --all-failed."""
        if task_ids and all_failed:
            raise click.UsageError("Give task IDs or --all-failed, not both.")
        if not task_ids and not all_failed:
            raise click.UsageError("Give task IDs to retry, or --all-failed.")
        if name is not None and not all_failed:
            raise click.UsageError(
                "--name filters --all-failed; give it with --all-failed."
            )
        storage = _storage(queue)
        if all_failed:
            count = inspection.count_dead(storage, name=name)
            scope = f" of {name}" if name else ""
            if not count:
                click.echo(f"No dead tasks{scope} to retry.")
                return
            if not yes:
                click.confirm(
                    f"Retry {count} dead task{'s' if count != 1 else ''}{scope}?",
                    abort=True,
                )
            retried = inspection.retry_dead(storage, name=name)
            _wake(queue)
            click.echo(
                f"Retried {len(retried)} task{'s' if len(retried) != 1 else ''}."
            )
            return
        _per_task(queue, task_ids, "retried", queue.retry)

    @group.command("delete")
    @click.argument("task_ids", metavar="ID...", nargs=-1, required=True)
    @_errors_as_click
    def delete(task_ids: tuple[str, ...]) -> None:
        """Delete the given tasks (not while they run)."""
        _per_task(queue, task_ids, "deleted", queue.cancel)

    @group.command("purge", short_help="Delete dead tasks (all or --older-than).")
    @click.option("--failed", is_flag=True, help="Delete dead tasks (required).")
    @click.option(
        "--older-than",
        type=Duration(),
        default=None,
        help="Only those whose last failure is older than this (30s, 15m, 2h, 7d).",
    )
    @click.option("--name", default=None, help="Only tasks of this task name.")
    @click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
    @_errors_as_click
    def purge(
        failed: bool, older_than: float | None, name: str | None, yes: bool
    ) -> None:
        """Delete dead tasks, all or those older than --older-than."""
        if not failed:
            raise click.UsageError(
                "purge deletes dead tasks only; say so with --failed"
                " (waiting tasks are removed one by one with 'delete')."
            )
        storage = _storage(queue)
        age = (
            ""
            if older_than is None
            else f" that failed over {format_age(older_than)} ago"
        )
        scope = f" of {name}" if name else ""
        count = inspection.count_dead(storage, older_than=older_than, name=name)
        if not count:
            click.echo(f"No dead tasks{scope}{age}.")
            return
        if not yes:
            click.confirm(
                f"Delete {count} dead task{'s' if count != 1 else ''}{scope}{age}?",
                abort=True,
            )
        deleted = inspection.purge_dead(storage, older_than=older_than, name=name)
        click.echo(
            f"Deleted {deleted} dead task{'s' if deleted != 1 else ''}{scope}{age}."
        )


def _wake(queue: PlainQueue) -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    for worker in list(queue._state(app).workers):
        worker.wake()


def _per_task(
    queue: PlainQueue,
    task_ids: Sequence[str],
    done: str,
    action: Callable[[str], bool],
) -> None:
    """Apply ``action`` to each id, print what happened to each, and exit 1 if
    any could not be changed (gone, or running)."""
    storage = _storage(queue)
    failed = False
    for task_id in task_ids:
        info = inspection.get_task(storage, task_id)
        if info is None:
            click.echo(f"No task {task_id}.", err=True)
            failed = True
            continue
        try:
            changed = action(task_id)
        except PlainQueueError as exc:
            click.echo(f"Task {task_id} not {done}: {exc}", err=True)
            failed = True
            continue
        if changed:
            click.echo(f"{done.capitalize()} {_describe(info)}.")
            continue
        now_info = inspection.get_task(storage, task_id)
        if now_info is None:
            click.echo(f"No task {task_id} (it finished meanwhile).", err=True)
        else:
            click.echo(
                f"Task {task_id} ({info.name}) is {now_info.state.value}; not {done}.",
                err=True,
            )
        failed = True
    if failed:
        raise click.exceptions.Exit(1)
