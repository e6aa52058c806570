"""``flask queue periodic``: the periodic tasks, their schedules and ticks.
It uses only :class:`~flask_plainqueue.PlainQueue`'s public API."""

from __future__ import annotations

import datetime
import json
import typing as t

import click
from flask.cli import AppGroup

from .cli_params import errors_as_click

if t.TYPE_CHECKING:
    from .extension import PlainQueue


def _when(value: datetime.datetime | None, missing: str) -> str:
    if value is None:
        return missing
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def add_periodic_commands(group: AppGroup, queue: PlainQueue) -> None:
    """Add ``periodic`` to ``group``."""

    @group.command(
        "periodic", short_help="Periodic tasks: schedule, last and next tick."
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
    @errors_as_click
    def periodic(as_json: bool) -> None:
        """One line per registered periodic task: its name, queue, schedule
        (the cron expression, in UTC unless a time zone is shown, or the
        interval), the last tick a worker enqueued and the next tick (UTC),
        and whether it is paused."""
        infos = queue.periodic_tasks()
        if as_json:
            click.echo(
                json.dumps(
                    [info.as_dict() for info in infos],
                    indent=2,
                    sort_keys=True,
                    ensure_ascii=True,
                )
            )
            return
        if not infos:
            click.echo("No periodic tasks are registered.")
            return
        # A column for pauses only when something is paused, so the usual
        # listing stays as it was.
        any_paused = any(info.paused for info in infos)
        rows = [["NAME", "QUEUE", "SCHEDULE", "LAST TICK", "NEXT TICK"]]
        if any_paused:
            rows[0].append("PAUSED")
        for info in infos:
            schedule = info.schedule + (f" ({info.tz})" if info.tz else "")
            row = [
                info.name,
                info.queue,
                schedule,
                _when(info.last_tick, "never"),
                _when(info.next_tick, "none"),
            ]
            if any_paused:
                row.append("paused" if info.paused else "")
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for index, row in enumerate(rows):
            line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
            line = line.rstrip()
            click.echo(click.style(line, bold=True) if index == 0 else line)
