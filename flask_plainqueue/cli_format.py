"""How the ``flask queue`` task commands print: timestamps, plurals, the
coloured table, JSON, and the one-line descriptions of tasks and pauses."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence

import click

from .info import Paused
from .info import TaskInfo
from .schema import TaskState

STATE_COLOURS = {
    TaskState.PENDING: "cyan",
    TaskState.SCHEDULED: "blue",
    TaskState.RUNNING: "green",
    TaskState.SUCCEEDED: "magenta",
    TaskState.DEAD: "red",
}


def when(value: datetime.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def table(rows: Sequence[Sequence[str]], styles: Sequence[str | None] = ()) -> None:
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


def echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True))


def pause_mark(paused: Paused, name: str, queue_name: str) -> str:
    """What pauses a row's tasks: ``queue``, ``task``, both, or ``""``."""
    return ", ".join(
        kind
        for kind, held in (
            ("queue", queue_name in paused.queues),
            ("task", name in paused.tasks),
        )
        if held
    )


def describe_paused(paused: Paused) -> str:
    parts = [f"queue {q!r}" for q in sorted(paused.queues)]
    parts += [f"task {n!r}" for n in sorted(paused.tasks)]
    return ", ".join(parts) + " ('flask queue resume' resumes)"


def describe(info: TaskInfo) -> str:
    return f"task {info.id} ({info.name})"
