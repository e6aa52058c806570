"""The ``flask queue`` commands for operators: ``workers``, ``health``,
``why``, ``pause``, ``resume`` and ``stats``. They use only
:class:`~flask_plainqueue.PlainQueue`'s public API."""

from __future__ import annotations

import sys
import typing as t
from collections.abc import Sequence

import click
from flask.cli import AppGroup

from .cli_format import echo_json
from .cli_format import table
from .cli_params import Duration
from .cli_params import errors_as_click
from .cli_params import TaskIdType
from .info import format_age

if t.TYPE_CHECKING:
    from .extension import PlainQueue

_WORKER_COLOURS = {"running": "green", "stopping": "yellow", "lost": "red"}


def _ids(ids: Sequence[int], most: int = 5) -> str:
    if not ids:
        return "-"
    shown = ", ".join(str(i) for i in ids[:most])
    return shown if len(ids) <= most else f"{shown} (+{len(ids) - most})"


def add_ops_commands(group: AppGroup, queue: PlainQueue) -> None:
    """Add the operator commands to ``group``."""

    @group.command("workers")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @errors_as_click
    def workers(as_json: bool) -> None:
        """List the registered workers: state (running, stopping, lost),
        heartbeat age and the tasks each runs now."""
        found = queue.workers()
        if as_json:
            echo_json([w.as_dict() for w in found])
            return
        if not found:
            click.echo("No workers registered.")
            return
        rows = [["ID", "KIND", "STATE", "HEARTBEAT", "QUEUES", "LOOPS", "RUNNING"]]
        for w in found:
            rows.append(
                [
                    w.id,
                    w.kind,
                    w.state,
                    f"{format_age(w.heartbeat_age)} ago",
                    "*" if w.queues is None else ",".join(w.queues),
                    str(w.concurrency),
                    _ids(w.running),
                ]
            )
        table(rows, [_WORKER_COLOURS.get(w.state) for w in found])

    @group.command("health")
    @click.option(
        "--max-age",
        type=Duration(),
        default=None,
        help="Fail when a due task (not paused) has waited this long, e.g. 5m.",
    )
    @click.option(
        "--queue",
        "-q",
        "queues",
        multiple=True,
        help="Fail unless a live worker serves this queue (repeatable).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @errors_as_click
    def health(max_age: float | None, queues: tuple[str, ...], as_json: bool) -> None:
        """Exit 0 when live workers serve the queues and due tasks get run,
        else 1 with the reason: for container and systemd health checks."""
        result = queue.health(max_age=max_age, queues=list(queues) or None)
        if as_json:
            echo_json(result.as_dict())
        elif result.ok:
            age = result.oldest_due_age
            waited = "no task is due" if age is None else f"oldest due {age:.1f}s"
            click.echo(f"ok: {result.workers} live worker(s), {waited}")
        else:
            click.echo(f"unhealthy: {'; '.join(result.problems)}", err=True)
        if not result.ok:
            sys.exit(1)

    @group.command("why")
    @click.argument("task_id", type=TaskIdType())
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @errors_as_click
    def why(task_id: int, as_json: bool) -> None:
        """Say why task TASK_ID is not running: one reason code and a
        sentence."""
        reason = queue.why(task_id)
        if as_json:
            echo_json(reason.as_dict())
        else:
            click.echo(f"{click.style(reason.code, bold=True)}: {reason.message}")

    def _pause_command(pause: bool) -> None:
        verb = "pause" if pause else "resume"

        @group.command(verb)
        @click.option("--queue", "-q", "queue_name", help=f"The queue to {verb}.")
        @click.option("--task", "-t", "task_name", help=f"The task name to {verb}.")
        @errors_as_click
        def command(queue_name: str | None, task_name: str | None) -> None:
            if queue_name is None and task_name is None:
                raise click.UsageError(f"say what to {verb}: --queue, --task or both.")
            change = queue.pause if pause else queue.resume
            changed = change(queue=queue_name, task=task_name)
            what = " and ".join(
                f"{kind} {name!r}"
                for kind, name in (("queue", queue_name), ("task", task_name))
                if name is not None
            )
            done = "paused" if pause else "resumed"
            if changed:
                click.echo(f"{what}: {done}")
            else:
                click.echo(f"{what}: already {done if pause else 'running'}")

        command.__doc__ = (
            "Pause a queue or task name: workers stop claiming it within a poll"
            " interval; running tasks finish."
            if pause
            else "Resume a paused queue or task name."
        )
        command.help = command.__doc__

    _pause_command(True)
    _pause_command(False)

    @group.command("stats")
    @click.option(
        "--since",
        type=Duration(),
        default="1h",
        show_default=True,
        help="How far back, e.g. 15m, 24h, 7d.",
    )
    @click.option("--name", "-n", default=None, help="Only this task name.")
    @click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print JSON, with the per-minute series.",
    )
    @errors_as_click
    def stats(since: float, name: str | None, as_json: bool) -> None:
        """Print the finished attempts per task name (succeeded, failed,
        dead, run time, per minute) as the workers counted them."""
        result = queue.stats(since=since, name=name)
        if as_json:
            echo_json(result.to_dict())
            return
        period = f"since {result.since:%Y-%m-%d %H:%M} UTC"
        if not result.minutes:
            click.echo(f"No finished attempts {period}.")
            return
        click.echo(f"Finished attempts {period}:")
        rows = [["TASK", "SUCCEEDED", "FAILED", "DEAD", "RUN TIME", "MEAN", "PER MIN"]]
        for counts in [*result.tasks, result.total]:
            mean = counts.mean_seconds
            rows.append(
                [
                    counts.name or "(total)",
                    str(counts.succeeded),
                    str(counts.failed),
                    str(counts.dead),
                    f"{counts.run_seconds:.3f}s",
                    "-" if mean is None else f"{mean:.3f}s",
                    f"{result.rate(counts):.2f}",
                ]
            )
        table(rows)
