"""What a worker may claim now: the tasks it serves that are not paused, their
names and batch sizes, and how often it polls. Worked out again only when a
task is registered or the pauses change, not on every claim."""

from __future__ import annotations

import datetime
import typing as t

from .config import QueueConfig
from .roster import Paused
from .tasks import TaskDefinition
from .tasks import TaskRegistry


class Claim(t.NamedTuple):
    """What a claim asks for."""

    #: The definitions it may run, by name.
    definitions: dict[str, TaskDefinition[t.Any, t.Any]]
    #: Their names, sorted.
    names: tuple[str, ...]
    #: The batch size of each name.
    batch_sizes: dict[str, int]
    #: How often claims hand back expired leases: once per poll interval, so a
    #: killed worker's tasks run again within one lease plus one poll.
    sweep_every: datetime.timedelta


class Claimable:
    """What a worker may claim, kept per registry version and pauses.

    :param registry: the app's task definitions.
    :param config: the app's settings (the poll interval).
    :param tasks: the task names the worker claims; ``None``: every one.
    """

    def __init__(
        self, registry: TaskRegistry, config: QueueConfig, tasks: frozenset[str] | None
    ) -> None:
        self.registry = registry
        self.config = config
        self.tasks = tasks
        # One tuple, replaced whole: claim loops read it on other threads.
        self._kept: tuple[tuple[int, Paused | None], Claim] = (
            (-1, None),
            Claim({}, (), {}, datetime.timedelta(seconds=1)),
        )

    def now(self, paused: Paused) -> Claim:
        """What may be claimed while ``paused`` holds."""
        key, claim = self._kept
        if key == (self.registry.version, paused):
            return claim
        definitions = {
            d.name: d
            for d in self.registry
            if (self.tasks is None or d.name in self.tasks)
            and not paused.holds(d.name, d.options.queue)
        }
        claim = Claim(
            definitions,
            tuple(sorted(definitions)),
            {n: d.options.batch_size for n, d in definitions.items()},
            datetime.timedelta(seconds=self.poll_interval()),
        )
        self._kept = ((self.registry.version, paused), claim)
        return claim

    def poll_interval(self) -> float:
        """The shortest of the poll interval and the tasks' own."""
        intervals = [
            d.options.poll_interval
            for d in self.registry
            if d.options.poll_interval is not None
        ]
        return min([self.config.poll_interval, *intervals])
