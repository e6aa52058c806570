"""Huey (``SqliteStorage``) measured the way :mod:`benchmarks.impl_ours` measures us."""

from __future__ import annotations

import os
import time
import typing as t
from pathlib import Path

from . import procs
from .common import Barrier
from .common import Skip
from .impl_ours import _sample_latency
from .impl_ours import _udp_socket
from .impl_ours import measure_idle_cpu


def _configure(workdir: Path, sync: str, **extra: t.Any) -> dict[str, str]:
    try:
        import huey  # type: ignore[import-untyped] # noqa: F401
    except ImportError as exc:
        raise Skip(f"huey is not installed: {exc}") from None
    values = {
        "HUEY_FILE": str(workdir / "huey.db"),
        "BENCH_SYNC": sync,
        "BENCH_DIR": str(workdir / "barrier"),
        **{k: str(v) for k, v in extra.items()},
    }
    os.environ.update(values)
    (workdir / "barrier").mkdir(exist_ok=True)
    return procs.child_env(**values)


def enqueue(*, workdir: Path, n: int, sync: str) -> dict[str, t.Any]:
    """Huey's enqueue (calling the task) one by one."""
    _configure(workdir, sync)
    from . import hueyapp

    hueyapp.bench_task(-1)
    start = time.perf_counter()
    for i in range(n):
        hueyapp.bench_task(i)
    elapsed = time.perf_counter() - start
    stored = hueyapp.huey.pending_count()
    if stored != n + 1:
        raise RuntimeError(f"{stored} tasks stored, expected {n + 1}")
    return {"rate": n / elapsed}


def process(
    *, workdir: Path, n: int, sync: str, workers: int = 1, accounts: int = 0
) -> dict[str, t.Any]:
    """A Huey consumer (thread workers) over ``n`` waiting tasks."""
    extra: dict[str, t.Any] = {"BENCH_STOP_AFTER": n}
    if accounts:
        uri = f"sqlite:///{workdir / 'app.db'}"
        extra.update(BENCH_TASK="account", BENCH_DB_URI=uri)
    env = _configure(workdir, sync, **extra)
    from . import hueyapp

    if accounts:
        from . import ourapp

        with hueyapp.flask_app.app_context():
            ourapp.Account.__table__.create(ourapp.db.engine)
            ourapp.db.session.add_all(
                [ourapp.Account(id=i, balance=0, touched=0) for i in range(accounts)]
            )
            ourapp.db.session.commit()
            ourapp.db.engine.dispose()
        items = [i % accounts for i in range(n)]
    else:
        items = list(range(n))
    # Enqueue untimed, in one transaction per chunk (Huey has no bulk enqueue).
    storage = hueyapp.huey.storage
    with storage.db(commit=True) as curs:
        for i in items:
            message = hueyapp.huey.serialize_task(hueyapp.bench_task.s(i))
            curs.execute(
                "insert into task (queue, data, priority) values (?, ?, ?)",
                (storage.name, storage.to_blob(message), 0.0),
            )
    storage.close()
    barrier = Barrier(workdir / "barrier")
    log = workdir / "worker.log"
    worker = procs.start(["-m", "benchmarks.hueyworker", str(workers)], env, log)
    try:
        barrier.wait_ready(1, [worker])
        start = barrier.go()
        procs.wait_all([worker], max(120.0, n / 100), log)
    finally:
        procs.stop([worker])
    result = barrier.results()[0]
    return {"rate": n / (result["end"] - start)}


def latency(*, workdir: Path, samples: int, sync: str) -> dict[str, t.Any]:
    """Enqueue-to-start latency with a Huey consumer in its own process (polling)."""
    sock = _udp_socket()
    env = _configure(
        workdir, sync, BENCH_TASK="latency", BENCH_UDP_PORT=sock.getsockname()[1]
    )
    from . import hueyapp

    log = workdir / "worker.log"
    worker = procs.start(["-m", "benchmarks.hueyworker", "1"], env, log)
    try:
        barrier = Barrier(workdir / "barrier")
        barrier.wait_ready(1, [worker])
        barrier.go()
        return _sample_latency(sock, hueyapp.bench_task, samples)
    finally:
        procs.stop([worker])


def idle_cpu(*, workdir: Path, seconds: float, sync: str) -> dict[str, t.Any]:
    env = _configure(workdir, sync)
    log = workdir / "worker.log"
    worker = procs.start(["-m", "benchmarks.hueyworker", "1"], env, log)
    try:
        barrier = Barrier(workdir / "barrier")
        barrier.wait_ready(1, [worker])
        barrier.go()
        return {"cpu_pct": measure_idle_cpu(worker.pid, seconds)}
    finally:
        procs.stop([worker])


def memory(*, workdir: Path, n: int, sync: str) -> dict[str, t.Any]:
    env = _configure(workdir, sync, BENCH_STOP_AFTER=n, BENCH_RSS_EVERY=max(1, n // 10))
    from . import hueyapp

    storage = hueyapp.huey.storage
    with storage.db(commit=True) as curs:
        for i in range(n):
            message = hueyapp.huey.serialize_task(hueyapp.bench_task.s(i))
            curs.execute(
                "insert into task (queue, data, priority) values (?, ?, ?)",
                (storage.name, storage.to_blob(message), 0.0),
            )
    storage.close()
    barrier = Barrier(workdir / "barrier")
    log = workdir / "worker.log"
    worker = procs.start(["-m", "benchmarks.hueyworker", "1"], env, log)
    try:
        barrier.wait_ready(1, [worker])
        start = barrier.go()
        procs.wait_all([worker], max(120.0, n / 100), log)
    finally:
        procs.stop([worker])
    return memory_result(barrier.results()[0], n, start)


def memory_result(r: dict[str, t.Any], n: int, start: float) -> dict[str, t.Any]:
    """RSS at start and end, and growth after the first tenth of the tasks (the
    warm-up of caches and thread stacks is not growth)."""
    samples = [rss for _, rss in r["rss_samples"]]
    return {
        "rss_start_mib": r["rss_start"],
        "rss_end_mib": r["rss_end"],
        "rss_growth_mib": max([r["rss_end"], *samples])
        - (samples[0] if samples else r["rss_start"]),
        "rate": n / (r["end"] - start),
    }
