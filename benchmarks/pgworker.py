"""pgqueuer and procrastinate workers in their own process:
``python -m benchmarks.pgworker LIB URL`` with ``BENCH_TASK`` (``count``/``latency``),
``BENCH_STOP_AFTER``, ``BENCH_BATCH``, ``BENCH_UDP_PORT`` and ``BENCH_DIR``."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import sys
import time
import typing as t

from .common import Barrier
from .common import rss_mib

KIND = os.environ.get("BENCH_TASK", "count")
STOP_AFTER = int(os.environ.get("BENCH_STOP_AFTER", "0"))
BATCH = int(os.environ.get("BENCH_BATCH", "10"))
UDP_PORT = int(os.environ.get("BENCH_UDP_PORT", "0"))


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.end: float | None = None
        self.done = asyncio.Event()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def hit(self, i: t.Any) -> None:
        if KIND == "latency":
            started = time.monotonic()
            self.udp.sendto(f"{i} {started!r}".encode(), ("127.0.0.1", UDP_PORT))
            return
        self.count += 1
        if self.count == STOP_AFTER:
            self.end = time.time()
            self.done.set()


async def run_pgqueuer(url: str, barrier: Barrier, counter: Counter) -> None:
    import asyncpg  # type: ignore[import-untyped]
    from pgqueuer import QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(url)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("bench_task")
    async def bench_task(job: t.Any) -> None:
        counter.hit(int(job.payload.decode()) if job.payload else None)

    barrier.ready_and_wait()
    runner = asyncio.create_task(
        qm.run(batch_size=BATCH, dequeue_timeout=datetime.timedelta(seconds=30))
    )
    if STOP_AFTER:
        await counter.done.wait()
        qm.shutdown.set()
        runner.cancel()
    else:
        await runner


async def run_procrastinate(url: str, barrier: Barrier, counter: Counter) -> None:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="bench_task")
    async def bench_task(i: int) -> None:
        counter.hit(i)

    async with app.open_async():
        barrier.ready_and_wait()
        runner = asyncio.create_task(
            app.run_worker_async(concurrency=1, install_signal_handlers=False)
        )
        if STOP_AFTER:
            await counter.done.wait()
            runner.cancel()
        else:
            await runner


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    lib, url = sys.argv[1], sys.argv[2]
    barrier = Barrier(os.environ["BENCH_DIR"])
    rss_start = rss_mib()

    async def go() -> None:
        counter = Counter()
        start_fn = run_pgqueuer if lib == "pgqueuer" else run_procrastinate
        await start_fn(url, barrier, counter)
        if not STOP_AFTER:
            return
        barrier.done(
            end=counter.end,
            count=counter.count,
            rss_start=rss_start,
            rss_end=rss_mib(),
        )
        sys.stdout.flush()
        # Exit from inside the loop: the measurement is over, and a peer's task
        # that ignores cancellation (pgqueuer's, seen here) would otherwise keep
        # asyncio.run() from returning, and the benchmark waiting for this
        # process.
        os._exit(0)

    asyncio.run(go())


if __name__ == "__main__":
    main()
