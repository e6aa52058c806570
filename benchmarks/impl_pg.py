"""The PostgreSQL peers, pgqueuer and procrastinate, each on a fresh database."""

from __future__ import annotations

import asyncio
import time
import typing as t
from pathlib import Path

from . import pg
from . import procs
from .common import Barrier
from .common import Skip
from .impl_ours import _sample_latency
from .impl_ours import _udp_socket
from .impl_ours import measure_idle_cpu


def _need(module: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        raise Skip(f"{module} is not installed: {exc}") from None


async def _pgqueuer_queries(url: str) -> t.Any:
    import asyncpg  # type: ignore[import-untyped]
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(url)
    return conn, Queries(AsyncpgDriver(conn))


async def _pgqueuer_install(url: str) -> None:
    conn, queries = await _pgqueuer_queries(url)
    await queries.install()
    await conn.close()


def _procrastinate_app(url: str) -> t.Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="bench_task")
    async def bench_task(i: int) -> None:
        pass

    return app, bench_task


async def _procrastinate_install(url: str) -> None:
    app, _ = _procrastinate_app(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


# -- enqueue --------------------------------------------------------------------


def pgqueuer_enqueue(
    *, workdir: Path, n: int, mode: str, engine: str, pg_url: str | None
) -> dict[str, t.Any]:
    _need("pgqueuer")
    with pg.fresh_database(pg_url) as (_, url):

        async def go() -> float:
            await _pgqueuer_install(url)
            conn, queries = await _pgqueuer_queries(url)
            payloads = [str(i).encode() for i in range(n)]
            start = time.perf_counter()
            if mode == "one":
                for p in payloads:
                    await queries.enqueue("bench_task", p)
            else:
                await queries.enqueue(["bench_task"] * n, payloads, [0] * n)
            elapsed = time.perf_counter() - start
            await conn.close()
            return elapsed

        return {"rate": n / asyncio.run(go())}


def procrastinate_enqueue(
    *, workdir: Path, n: int, mode: str, engine: str, pg_url: str | None
) -> dict[str, t.Any]:
    _need("procrastinate")
    with pg.fresh_database(pg_url) as (_, url):

        async def go() -> float:
            await _procrastinate_install(url)
            app, task = _procrastinate_app(url)
            async with app.open_async():
                start = time.perf_counter()
                if mode == "one":
                    for i in range(n):
                        await task.defer_async(i=i)
                else:
                    await task.batch_defer_async(*({"i": i} for i in range(n)))
                return time.perf_counter() - start

        return {"rate": n / asyncio.run(go())}


# -- processing -----------------------------------------------------------------


def _run_worker(
    workdir: Path, lib: str, url: str, **env_extra: t.Any
) -> tuple[float, dict[str, t.Any]]:
    barrier_dir = workdir / "barrier"
    barrier_dir.mkdir(exist_ok=True)
    env = procs.child_env(
        BENCH_DIR=str(barrier_dir), **{k: str(v) for k, v in env_extra.items()}
    )
    log = workdir / "worker.log"
    worker = procs.start(["-m", "benchmarks.pgworker", lib, url], env, log)
    barrier = Barrier(barrier_dir)
    try:
        barrier.wait_ready(1, [worker])
        start = barrier.go()
        procs.wait_all([worker], 600, log)
    finally:
        procs.stop([worker])
    return start, barrier.results()[0]


def pgqueuer_process(
    *, workdir: Path, n: int, batch: int, engine: str, pg_url: str | None
) -> dict[str, t.Any]:
    _need("pgqueuer")
    _need("asyncpg")
    with pg.fresh_database(pg_url) as (_, url):

        async def fill() -> None:
            await _pgqueuer_install(url)
            conn, queries = await _pgqueuer_queries(url)
            for s in range(0, n, 10_000):
                m = min(n, s + 10_000) - s
                await queries.enqueue(
                    ["bench_task"] * m,
                    [str(i).encode() for i in range(s, s + m)],
                    [0] * m,
                )
            await conn.close()

        asyncio.run(fill())
        start, result = _run_worker(
            workdir, "pgqueuer", url, BENCH_STOP_AFTER=n, BENCH_BATCH=batch
        )
        return {"rate": n / (result["end"] - start)}


def procrastinate_process(
    *, workdir: Path, n: int, engine: str, pg_url: str | None
) -> dict[str, t.Any]:
    _need("procrastinate")
    with pg.fresh_database(pg_url) as (_, url):

        async def fill() -> None:
            await _procrastinate_install(url)
            app, task = _procrastinate_app(url)
            async with app.open_async():
                await task.batch_defer_async(*({"i": i} for i in range(n)))

        asyncio.run(fill())
        start, result = _run_worker(workdir, "procrastinate", url, BENCH_STOP_AFTER=n)
        return {"rate": n / (result["end"] - start)}


# -- latency and idle CPU ----------------------------------------------------------


def _latency(
    workdir: Path, lib: str, url: str, samples: int, enqueue: t.Callable[[int], None]
) -> dict[str, t.Any]:
    sock = _udp_socket()
    barrier_dir = workdir / "barrier"
    barrier_dir.mkdir()
    env = procs.child_env(
        BENCH_DIR=str(barrier_dir),
        BENCH_TASK="latency",
        BENCH_UDP_PORT=str(sock.getsockname()[1]),
    )
    log = workdir / "worker.log"
    worker = procs.start(["-m", "benchmarks.pgworker", lib, url], env, log)
    try:
        barrier = Barrier(barrier_dir)
        barrier.wait_ready(1, [worker])
        barrier.go()
        return _sample_latency(sock, enqueue, samples)
    finally:
        procs.stop([worker])


def pgqueuer_latency(
    *, workdir: Path, samples: int, engine: str, pg_url: str | None
) -> dict[str, t.Any]:
    _need("pgqueuer")
    with pg.fresh_database(pg_url) as (_, url):
        asyncio.run(_pgqueuer_install(url))
        loop = asyncio.new_event_loop()
        conn, queries = loop.run_until_complete(_pgqueuer_queries(url))

        def enqueue(i: int) -> None:
            loop.run_until_complete(queries.enqueue("bench_task", str(i).encode()))

        try:
            return _latency(workdir, "pgqueuer", url, samples, enqueue)
        finally:
            loop.run_until_complete(conn.close())
            loop.close()


def procrastinate_latency(
    *, workdir: Path, samples: int, engine: str, pg_url: str | None
) -> dict[str, t.Any]:
    _need("procrastinate")
    with pg.fresh_database(pg_url) as (_, url):
        asyncio.run(_procrastinate_install(url))
        loop = asyncio.new_event_loop()
        app, task = _procrastinate_app(url)
        loop.run_until_complete(app.open_async())

        def enqueue(i: int) -> None:
            loop.run_until_complete(task.defer_async(i=i))

        try:
            return _latency(workdir, "procrastinate", url, samples, enqueue)
        finally:
            loop.run_until_complete(app.close_async())
            loop.close()


def _idle(workdir: Path, lib: str, url: str, seconds: float) -> dict[str, t.Any]:
    barrier_dir = workdir / "barrier"
    barrier_dir.mkdir()
    env = procs.child_env(BENCH_DIR=str(barrier_dir))
    log = workdir / "worker.log"
    worker = procs.start(["-m", "benchmarks.pgworker", lib, url], env, log)
    try:
        barrier = Barrier(barrier_dir)
        barrier.wait_ready(1, [worker])
        barrier.go()
        return {"cpu_pct": measure_idle_cpu(worker.pid, seconds)}
    finally:
        procs.stop([worker])


def pgqueuer_idle(
    *, workdir: Path, seconds: float, engine: str, pg_url: str | None
) -> dict[str, t.Any]:
    _need("pgqueuer")
    with pg.fresh_database(pg_url) as (_, url):
        asyncio.run(_pgqueuer_install(url))
        return _idle(workdir, "pgqueuer", url, seconds)


def procrastinate_idle(
    *, workdir: Path, seconds: float, engine: str, pg_url: str | None
) -> dict[str, t.Any]:
    _need("procrastinate")
    with pg.fresh_database(pg_url) as (_, url):
        asyncio.run(_procrastinate_install(url))
        return _idle(workdir, "procrastinate", url, seconds)
