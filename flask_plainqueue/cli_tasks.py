"""The ``flask queue`` commands that inspect and administer stored tasks:
``status``, ``list``, ``show``, ``retry``, ``delete`` and ``purge`` (``export``
and ``import`` are :mod:`.cli_transfer`'s). They use only :class:`~flask_plainqueue.PlainQueue`'s public
API."""

from __future__ import annotations

import typing as t
from collections.abc import Callable
from collections.abc import Sequence

import click
from flask.cli import AppGroup

from .cli_format import describe
from .cli_format import describe_paused
from .cli_format import echo_json
from .cli_format import pause_mark
from .cli_format import plural
from .cli_format import STATE_COLOURS
from .cli_format import table
from .cli_format import when
from .cli_params import Duration
from .cli_params import errors_as_click
from .cli_params import TaskIdType
from .exceptions import PlainQueueError
from .info import format_age
from .info import STATES
from .schema import TaskState

if t.TYPE_CHECKING:
    from .extension import PlainQueue

#: The most rows ``list`` shows at once.
MAX_LIMIT = 100_000


def _chosen_states(failed: bool, states: tuple[str, ...]) -> list[TaskState] | None:
    chosen = [TaskState(s) for s in states]
    if failed:
        chosen.append(TaskState.DEAD)
    return sorted(set(chosen), key=STATES.index) or None


def add_task_commands(group: AppGroup, queue: PlainQueue) -> None:
    """Add the inspection and admin commands to ``group``."""

    @group.command("status", short_help="Counts per task and state, oldest due task.")
    @click.option("--queue", "queue_name", default=None, help="Only this queue.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
    @errors_as_click
    def status(queue_name: str | None, as_json: bool) -> None:
        """Counts per task name, queue and state, the oldest due task's wait,
        the workers running tasks now, and what is paused."""
        result = queue.status(queue=queue_name)
        if as_json:
            echo_json(result.as_dict())
            return
        if not result.counts:
            scope = f"Queue {queue_name!r} has no tasks." if queue_name else ""
            click.echo(scope or "The queue is empty.")
        else:
            header = ["TASK", "QUEUE", *(s.value.upper() for s in STATES)]
            rows = [header]
            per_name = sorted(
                (name, queue_of, counts)
                for queue_of, names in result.queues.items()
                for name, counts in names.items()
            )
            paused = result.paused
            marks = [pause_mark(paused, name, q) for name, q, _ in per_name]
            if any(marks):
                header.append("PAUSED")
            for (name, queue_of, counts), mark in zip(per_name, marks, strict=True):
                row = [name, queue_of, *(str(counts[s]) for s in STATES)]
                rows.append(row + [mark] if any(marks) else row)
            totals = result.totals
            rows.append(["(total)", "", *(str(totals[s]) for s in STATES)])
            aligned = 2 + len(STATES)
            widths = [max(len(r[i]) for r in rows) for i in range(aligned)]
            for index, row in enumerate(rows):
                line = "  ".join(
                    cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                    for i, cell in enumerate(row[:aligned])
                )
                if row[aligned:]:
                    line = f"{line}  {row[aligned]}".rstrip()
                click.echo(click.style(line, bold=True) if index == 0 else line)
        click.echo("")
        if result.paused:
            click.echo(f"Paused: {describe_paused(result.paused)}")
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
                click.echo(f"  {owner}  {plural(n, 'task')}")
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
    @click.option("--queue", "queue_name", default=None, help="Only this queue.")
    @click.option(
        "--limit",
        type=click.IntRange(min=1, max=MAX_LIMIT),
        default=50,
        show_default=True,
        help="Show at most this many.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
    @errors_as_click
    def list_(
        failed: bool,
        states: tuple[str, ...],
        name: str | None,
        queue_name: str | None,
        limit: int,
        as_json: bool,
    ) -> None:
        """One line per task: id, name, queue, state ("pending (paused)"
        while a pause holds it), attempts, due (or created) and the first line
        of its last error."""
        chosen = _chosen_states(failed, states)
        tasks = queue.tasks(state=chosen, name=name, queue=queue_name, limit=limit)
        if as_json:
            echo_json([info.as_dict() for info in tasks])
            return
        if not tasks:
            click.echo("No tasks.")
            return
        rows = [
            ["ID", "NAME", "STATE", "QUEUE", "ATTEMPTS", "DUE/CREATED", "LAST ERROR"]
        ]
        styles: list[str | None] = []
        for info in tasks:
            waiting = info.state in (TaskState.PENDING, TaskState.SCHEDULED)
            error = info.error_summary
            if len(error) > 80:
                error = error[:79] + "…"
            rows.append(
                [
                    str(info.id),
                    info.name,
                    f"{info.state.value} (paused)" if info.paused else info.state.value,
                    info.queue,
                    str(info.attempts),
                    when(info.run_at if waiting else info.created),
                    error,
                ]
            )
            styles.append(STATE_COLOURS[info.state])
        table(rows, styles)
        total = queue.count(state=chosen, name=name, queue=queue_name)
        if total > len(tasks):
            click.echo(f"({len(tasks)} of {total} shown; use --limit to see more)")

    list_.name = "list"

    @group.command("show")
    @click.argument("task_id", metavar="ID", type=TaskIdType())
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
    @errors_as_click
    def show(task_id: int, as_json: bool) -> None:
        """Everything about one task: its fields, data and full traceback."""
        info = queue.get(task_id)
        if info is None:
            raise click.ClickException(f"No task {task_id}.")
        if as_json:
            echo_json(info.as_dict())
            return
        fields = [
            ("id", str(info.id)),
            ("name", info.name),
            (
                "state",
                click.style(info.state.value, fg=STATE_COLOURS[info.state])
                + (" (paused)" if info.paused else ""),
            ),
            ("queue", info.queue),
            ("priority", str(info.priority)),
            ("created", when(info.created)),
            ("run at", when(info.run_at)),
            ("attempts", str(info.attempts)),
            ("failures", str(info.failed_nr)),
            ("failed last", when(info.failed_last)),
            ("finished", when(info.finished)),
            ("lease owner", info.lease_owner or "-"),
            ("unique key", info.unique_key or "-"),
        ]
        # A hand-written row's unreadable value replaces its placeholder.
        labels = {"run_at": "run at", "failed_last": "failed last"}
        bad = {labels.get(key, key): value for key, value in info.invalid.items()}
        fields = [
            (label, click.style(f"invalid: {bad[label]!r}", fg="red"))
            if label in bad
            else (label, value)
            for label, value in fields
        ]
        width = max(len(label) for label, _ in fields)
        for label, value in fields:
            click.echo(f"{label.ljust(width)}  {value}")
        click.echo("")
        click.echo(click.style("data:", bold=True))
        click.echo(info.data_pretty)
        for label, text in (
            ("progress", info.progress_pretty),
            ("result", info.result_pretty),
        ):
            if text is not None:
                click.echo("")
                click.echo(click.style(f"{label}:", bold=True))
                click.echo(text)
        if info.error:
            click.echo("")
            click.echo(click.style("last error:", bold=True))
            click.echo(info.error.rstrip("\n"))

    @group.command("retry", short_help="Run tasks again now (IDs or --all-failed).")
    @click.argument("task_ids", metavar="[ID]...", nargs=-1, type=TaskIdType())
    @click.option("--all-failed", is_flag=True, help="Retry every dead task.")
    @click.option(
        "--name", default=None, help="With --all-failed: only this task name."
    )
    @click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
    @errors_as_click
    def retry(
        task_ids: tuple[int, ...], all_failed: bool, name: str | None, yes: bool
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
        if not all_failed:
            _per_task(queue, task_ids, "retried", queue.retry)
            return
        count = queue.count(state=TaskState.DEAD, name=name)
        scope = f" of {name}" if name else ""
        if not count:
            click.echo(f"No dead tasks{scope} to retry.")
            return
        if not yes:
            click.confirm(f"Retry {plural(count, 'dead task')}{scope}?", abort=True)
        retried = queue.retry_failed(name=name)
        click.echo(f"Retried {plural(len(retried), 'task')}.")

    @group.command("delete", short_help="Delete tasks: IDs, or waiting ones by filter.")
    @click.argument("task_ids", metavar="[ID]...", nargs=-1, type=TaskIdType())
    @click.option("--name", default=None, help="Only tasks of this task name.")
    @click.option("--queue", "queue_name", default=None, help="Only this queue.")
    @click.option(
        "--state",
        "states",
        multiple=True,
        type=click.Choice([s.value for s in STATES if s is not TaskState.RUNNING]),
        help="Only tasks in this state (repeatable; default pending and scheduled).",
    )
    @click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
    @errors_as_click
    def delete(
        task_ids: tuple[int, ...],
        name: str | None,
        queue_name: str | None,
        states: tuple[str, ...],
        yes: bool,
    ) -> None:
        """Delete the given tasks, or the tasks that match --name, --queue and
        --state (default: the waiting ones, pending and scheduled). A running
        task is never deleted."""
        filtered = name is not None or queue_name is not None or bool(states)
        if task_ids and filtered:
            raise click.UsageError(
                "Give task IDs or filters (--name, --queue, --state), not both."
            )
        if not task_ids and not filtered:
            raise click.UsageError(
                "Give task IDs to delete, or filters (--name, --queue, --state)"
                " for the tasks to delete."
            )
        if task_ids:
            _per_task(queue, task_ids, "deleted", queue.delete)
            return
        chosen = sorted({TaskState(s) for s in states}, key=STATES.index) or None
        kind = "waiting" if chosen is None else "/".join(s.value for s in chosen)
        scope = (f" of {name}" if name else "") + (
            f" on queue {queue_name}" if queue_name else ""
        )
        count = queue.delete_tasks(
            state=chosen, name=name, queue=queue_name, dry_run=True
        )
        if not count:
            click.echo(f"No {kind} tasks{scope}.")
            return
        if not yes:
            click.confirm(f"Delete {plural(count, f'{kind} task')}{scope}?", abort=True)
        deleted = queue.delete_tasks(state=chosen, name=name, queue=queue_name)
        click.echo(f"Deleted {plural(deleted, f'{kind} task')}{scope}.")

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
    @errors_as_click
    def purge(
        failed: bool, older_than: float | None, name: str | None, yes: bool
    ) -> None:
        """Delete dead tasks, all or those older than --older-than."""
        if not failed:
            raise click.UsageError(
                "purge deletes dead tasks only; say so with --failed"
                " (waiting tasks are removed one by one with 'delete')."
            )
        age = (
            ""
            if older_than is None
            else f" that failed over {format_age(older_than)} ago"
        )
        scope = f" of {name}" if name else ""
        count = queue.purge(older_than=older_than, name=name, dry_run=True)
        if not count:
            click.echo(f"No dead tasks{scope}{age}.")
            return
        if not yes:
            click.confirm(
                f"Delete {plural(count, 'dead task')}{scope}{age}?", abort=True
            )
        deleted = queue.purge(older_than=older_than, name=name)
        click.echo(f"Deleted {plural(deleted, 'dead task')}{scope}{age}.")


def _per_task(
    queue: PlainQueue,
    task_ids: Sequence[int],
    done: str,
    action: Callable[[int], bool],
) -> None:
    """Apply ``action`` to each id, print what happened to each, and exit 1 if
    any could not be changed (gone, or running)."""
    failed = False
    for task_id in task_ids:
        info = queue.get(task_id)
        if info is None:
            click.echo(f"Error: No task {task_id}.", err=True)
            failed = True
            continue
        try:
            changed = action(task_id)
        except PlainQueueError as exc:
            click.echo(f"Error: Task {task_id} not {done}: {exc}", err=True)
            failed = True
            continue
        if changed:
            click.echo(f"{done.capitalize()} {describe(info)}.")
            continue
        now_info = queue.get(task_id)
        if now_info is None:
            click.echo(f"Error: No task {task_id} (it finished meanwhile).", err=True)
        else:
            click.echo(
                f"Error: Task {task_id} ({info.name}) is {now_info.state.value};"
                f" not {done}.",
                err=True,
            )
        failed = True
    if failed:
        raise click.exceptions.Exit(1)
