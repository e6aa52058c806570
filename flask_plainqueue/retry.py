"""The retry rule: how long a failed task waits before its next attempt (no I/O)."""

from __future__ import annotations

import random

from .validate import MAX_SECONDS


def retry_delay(
    failed_nr: int,
    *,
    interval: float,
    backoff: float = 1.0,
    jitter: float = 0.0,
    max_delay: float = 3600.0,
    rand: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``failed_nr + 1``.

    ``min(max_delay, interval * backoff ** (failed_nr - 1))``, then stretched by a
    random factor in ``[1, 1 + jitter]`` so that many tasks failing together do not
    retry together. Jitter only ever lengthens the wait, so a task never runs
    before ``retry_interval`` has passed.

    :param failed_nr: failures so far, counting the one that just happened (>= 1).
    """
    exponent = max(failed_nr - 1, 0)
    try:
        # A float power: an int one would compute a huge exact number first.
        delay = interval * float(backoff) ** exponent
    except OverflowError:
        delay = max_delay
    delay = min(max_delay, delay)
    if jitter > 0 and delay > 0:
        delay *= 1 + (rand or random).uniform(0, jitter)
    # Whatever the options, a due time computed from the result must fit.
    return min(delay, MAX_SECONDS)


def is_dead(failed_nr: int, max_retries: int) -> bool:
    """Whether a task that has failed ``failed_nr`` times is out of retries.

    As in plainweb, a task is retried until ``failed_nr`` exceeds ``max_retries``,
    so it runs at most ``max_retries + 1`` times.
    """
    return failed_nr > max_retries
