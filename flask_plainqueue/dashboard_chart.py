"""The overview's chart of finished attempts: the last 24 hours of
:meth:`~flask_plainqueue.PlainQueue.stats` as stacked bars (succeeded below,
failed on top), laid out here and drawn by the template as an inline SVG,
so the page needs no script and no inline style."""

from __future__ import annotations

import dataclasses
import datetime

from .stats import Stats
from .stats import StatsCounts

#: The period the overview charts (seconds).
CHART_PERIOD = 24 * 3600.0
#: Minutes per bar: 144 bars over 24 hours.
CHART_STEP = 10
#: The drawing's size in SVG units; the bars fill ``PLOT_HEIGHT`` of it.
WIDTH = 720.0
HEIGHT = 180.0
PLOT_HEIGHT = 150.0
#: Hours between two time labels.
LABEL_HOURS = 3


@dataclasses.dataclass(frozen=True)
class Bar:
    """One bar: ``step`` minutes of finished attempts."""

    x: float
    width: float
    #: The succeeded part, from the baseline up.
    ok_y: float
    ok_height: float
    #: The failed part, on top of the succeeded one.
    failed_y: float
    failed_height: float
    #: What a pointer over the bar shows (and a screen reader reads).
    label: str


@dataclasses.dataclass(frozen=True)
class Chart:
    """The chart's bars and labels, in SVG units."""

    title: str
    description: str
    bars: tuple[Bar, ...]
    #: The highest bar's attempts per minute (the scale's top).
    peak: float
    #: ``(x, text)`` of the time labels.
    ticks: tuple[tuple[float, str], ...]
    width: float = WIDTH
    height: float = HEIGHT
    baseline: float = PLOT_HEIGHT


def chart(stats: Stats, name: str | None = None, *, step: int = CHART_STEP) -> Chart:
    """Lay out ``stats``' attempts (of task ``name``; ``None``: of every
    task) as one bar per ``step`` minutes, scaled so the busiest bar is
    :data:`PLOT_HEIGHT` high."""
    series = stats.series(name, step=step)
    peak = max((counts.finished for _, counts in series), default=0)
    scale = PLOT_HEIGHT / peak if peak else 0.0
    width = WIDTH / max(len(series), 1)
    bars = []
    for index, (start, counts) in enumerate(series):
        ok = counts.succeeded * scale
        failed = counts.failed * scale
        end = start + datetime.timedelta(minutes=step)
        label = (
            f"{start:%H:%M}–{end:%H:%M} UTC: {counts.succeeded} succeeded,"
            f" {counts.failed} failed ({counts.dead} dead)"
        )
        bars.append(
            Bar(
                x=round(index * width, 2),
                width=round(width, 2),
                ok_y=round(PLOT_HEIGHT - ok, 2),
                ok_height=round(ok, 2),
                failed_y=round(PLOT_HEIGHT - ok - failed, 2),
                failed_height=round(failed, 2),
                label=label,
            )
        )
    ticks = []
    for index, (start, _) in enumerate(series):
        if start.minute == 0 and start.hour % LABEL_HOURS == 0:
            ticks.append((round(index * width, 2), f"{start:%H:%M}"))
    total = stats.total if name is None else _of(stats, name)
    what = "all tasks" if name is None else f"task {name}"
    hours = round((stats.until - stats.since).total_seconds() / 3600)
    return Chart(
        title=f"Finished attempts per {step} minutes, last {hours} hours, {what}",
        description=(
            f"{total.succeeded} succeeded and {total.failed} failed"
            f" ({total.dead} dead); the busiest {step} minutes had"
            f" {peak} ({peak / step:.1f} per minute)."
        ),
        bars=tuple(bars),
        peak=peak / step,
        ticks=tuple(ticks),
    )


def _of(stats: Stats, name: str) -> StatsCounts:
    for counts in stats.tasks:
        if counts.name == name:
            return counts
    return StatsCounts(name)
