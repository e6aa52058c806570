"""The ``flask queue export`` and ``import`` commands: a queue's waiting
tasks as JSON Lines, and back. They use only
:class:`~flask_plainqueue.PlainQueue`'s public API."""

from __future__ import annotations

import typing as t

import click
from flask.cli import AppGroup

from .cli_format import plural
from .cli_params import errors_as_click
from .exceptions import TransferError

if t.TYPE_CHECKING:
    from .extension import PlainQueue


def add_transfer_commands(group: AppGroup, queue: PlainQueue) -> None:
    """Add the export and import commands to ``group``."""

    @group.command("export", short_help="Write waiting tasks as JSON Lines.")
    @click.argument(
        "output", type=click.File("w", encoding="utf-8", lazy=True), default="-"
    )
    @click.option(
        "--include-dead",
        is_flag=True,
        help="Export dead tasks too (kept for inspection).",
    )
    @errors_as_click
    def export_command(output: t.TextIO, include_dead: bool) -> None:
        """Write the queue's waiting tasks (due, scheduled, running) to OUTPUT
        (default: standard output), one JSON object per line, for ``flask queue
        import`` in another app or database.

        Stop the workers first: a task a worker holds is exported as due now,
        and would run again if the worker finished it after all.
        """
        result = queue.export_tasks(output, include_dead=include_dead)
        output.flush()
        name = getattr(output, "name", "-")
        where = "standard output" if name in ("-", "<stdout>") else name
        click.echo(
            f"Exported {plural(result.count, 'task')} ({result.dead} dead) to {where}.",
            err=True,
        )
        if result.running:
            click.echo(
                f"Warning: {result.running} task(s) were held by a running worker and"
                " were exported as due now; stop the workers before exporting so no"
                " task runs in both places.",
                err=True,
            )
        if result.undecodable:
            click.echo(
                f"Warning: {result.undecodable} task(s) have data that is not valid"
                " JSON; exported as 'data_text'.",
                err=True,
            )

    @group.command("import", short_help="Store tasks from a 'flask queue export' file.")
    @click.argument("source", type=click.File("r", encoding="utf-8"), default="-")
    @errors_as_click
    def import_command(source: t.TextIO) -> None:
        """Store the tasks in SOURCE (a file written by ``flask queue export``, or
        ``-`` for standard input) in this app's queue, in one transaction: all of
        them or, on an error, none. New ids are assigned."""
        try:
            result = queue.import_tasks(source)
        except TransferError as exc:
            raise click.ClickException(str(exc)) from exc
        message = f"Imported {plural(result.count, 'task')}"
        if result.duplicates:
            message += (
                f"; skipped {result.duplicates} whose unique_key a waiting task"
                " already has"
            )
        click.echo(message + ".")
        for name in sorted(result.unknown_names):
            click.echo(
                f"Warning: no task definition named {name!r} is registered in this"
                " app; its tasks were imported and wait for a worker that knows it.",
                err=True,
            )
