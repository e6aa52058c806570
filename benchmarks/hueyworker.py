"""A Huey consumer with thread workers: ``python -m benchmarks.hueyworker WORKERS``.

Waits at the start barrier, then consumes until ``BENCH_STOP_AFTER`` tasks ran
(or, with 0, until killed)."""

from __future__ import annotations

import logging
import os
import sys
import time

from huey.consumer import Consumer  # type: ignore[import-untyped]

from .common import Barrier
from .common import rss_mib


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    from . import hueyapp

    consumer = Consumer(hueyapp.huey, workers=int(sys.argv[1]), worker_type="thread")
    barrier = Barrier(os.environ["BENCH_DIR"])
    rss_start = rss_mib()
    start = barrier.ready_and_wait()
    consumer.start()
    if hueyapp.stop_after:
        hueyapp.done.wait()
        barrier.done(
            start=start,
            end=hueyapp.end_time[0],
            count=hueyapp.count,
            rss_start=rss_start,
            rss_end=rss_mib(),
            rss_samples=hueyapp.rss_samples,
        )
        sys.stdout.flush()
        os._exit(0)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
