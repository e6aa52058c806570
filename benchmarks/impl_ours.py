"""Our measurements: ``perform``/``perform_many`` in the measuring process, and
``flask queue work`` processes (the real CLI) for everything a worker does."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import random
import shutil
import socket
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

from . import pg
from . import procs
from .common import Barrier
from .common import fill_sqlite_queue
from .common import percentile
from .common import TABLE
from .common import TASK_NAME

UTC = datetime.timezone.utc

WORK = ["-m", "flask", "--app", "benchmarks.ourapp:create_app", "queue", "work"]


def _env(workdir: Path, uri: str, **extra: t.Any) -> dict[str, str]:
    values = {"BENCH_DB_URI": uri, "BENCH_DIR": str(workdir / "barrier")}
    values.update({k: str(v) for k, v in extra.items() if v is not None})
    return procs.child_env(**values)


@contextlib.contextmanager
def _database(workdir: Path, engine: str, pg_url: str | None) -> Iterator[str]:
    if engine == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
    else:
        with pg.fresh_database(pg_url) as (sa_url, _):
            yield sa_url


def _app(uri: str, **env: t.Any) -> t.Any:
    """Our app in this (measuring) process, with its tables created."""
    os.environ["BENCH_DB_URI"] = uri
    os.environ.pop("BENCH_DIR", None)
    for key, value in env.items():
        os.environ[key] = str(value)
    from . import ourapp

    app = ourapp.create_app()
    with app.app_context():
        ourapp.db.create_all()
    return app


def _fill(
    app: t.Any, uri: str, n: int, data: t.Callable[[int], t.Any] | None = None
) -> None:
    """Enqueue ``n`` tasks, untimed: raw sqlite3 on SQLite, perform_many elsewhere."""
    from . import ourapp

    if uri.startswith("sqlite"):
        with app.app_context():
            ourapp.db.engine.dispose()
        make = None if data is None else (lambda i: json.dumps(data(i)))
        fill_sqlite_queue(Path(uri.removeprefix("sqlite:///")), n, data=make)
        return
    with app.app_context():
        for start in range(0, n, 10_000):
            items = range(start, min(n, start + 10_000))
            ourapp.queue.perform_many(
                "bench_task", [data(i) if data else {"i": i} for i in items]
            )
        ourapp.db.engine.dispose()


def _remaining(app: t.Any) -> int:
    from . import ourapp

    with app.app_context():
        with ourapp.db.engine.connect() as conn:
            return int(
                conn.exec_driver_sql(f"SELECT count(*) FROM {TABLE}").scalar_one()
            )


def _run_workers(
    workdir: Path,
    uri: str,
    *,
    processes: int,
    args: t.Sequence[str] = (),
    timeout: float,
    env_extra: dict[str, t.Any] | None = None,
    burst: bool = True,
) -> tuple[float, list[dict[str, t.Any]]]:
    """Start the workers, release them together, wait until they exit; return the
    start time and what each reported."""
    barrier_dir = workdir / "barrier"
    shutil.rmtree(barrier_dir, ignore_errors=True)
    barrier_dir.mkdir()
    barrier = Barrier(barrier_dir)
    env = _env(workdir, uri, **(env_extra or {}))
    log = workdir / "worker.log"
    argv = [*WORK, *(["--burst"] if burst else []), *args]
    started = [procs.start(argv, env, log) for _ in range(processes)]
    try:
        barrier.wait_ready(processes, started)
        start = barrier.go()
        procs.wait_all(started, timeout, log)
    finally:
        procs.stop(started)
    return start, barrier.results()


# -- case 1: enqueue ----------------------------------------------------------


def enqueue(
    *,
    workdir: Path,
    n: int,
    mode: str,
    engine: str = "sqlite",
    pg_url: str | None = None,
) -> dict[str, t.Any]:
    """``perform`` one by one (``mode="one"``) or one ``perform_many`` call."""
    from . import ourapp

    with _database(workdir, engine, pg_url) as uri:
        app = _app(uri, BENCH_TASK="noop")
        items: list[t.Any] = [{"i": i} for i in range(n)]
        with app.app_context():
            ourapp.queue.perform("bench_task", {"warm": True})
            start = time.perf_counter()
            if mode == "one":
                for item in items:
                    ourapp.queue.perform("bench_task", item)
            else:
                ourapp.queue.perform_many("bench_task", items)
            elapsed = time.perf_counter() - start
        stored = _remaining(app) - 1
        with app.app_context():
            ourapp.db.engine.dispose()
    if stored != n:
        raise RuntimeError(f"{stored} rows stored, expected {n}")
    return {"rate": n / elapsed}


# -- case 2: processing -------------------------------------------------------


def process(
    *,
    workdir: Path,
    n: int,
    batch: int,
    processes: int = 1,
    engine: str = "sqlite",
    pg_url: str | None = None,
    log_level: str = "WARNING",
    sync: str = "NORMAL",
    malloc_trim: int | None = None,
    task: str = "noop",
    accounts: int = 0,
    pg_commit: str | None = None,
) -> dict[str, t.Any]:
    """``processes`` × ``flask queue work --burst`` over ``n`` waiting tasks."""
    with _database(workdir, engine, pg_url) as uri:
        app = _app(uri, BENCH_TASK=task, BENCH_BATCH=batch)
        if accounts:
            from . import ourapp

            with app.app_context():
                ourapp.db.session.add_all(
                    [
                        ourapp.Account(id=i, balance=0, touched=0)
                        for i in range(accounts)
                    ]
                )
                ourapp.db.session.commit()

            def data(i: int) -> t.Any:
                return {"account": i % accounts}

            fill_data: t.Callable[[int], t.Any] | None = data
        else:
            fill_data = None
        _fill(app, uri, n, fill_data)
        env_extra: dict[str, t.Any] = {
            "BENCH_TASK": task,
            "BENCH_BATCH": batch,
            "BENCH_SYNC": sync,
            "MALLOC_TRIM_THRESHOLD_": malloc_trim,
            "BENCH_PG_COMMIT": pg_commit,
        }
        start, results = _run_workers(
            workdir,
            uri,
            processes=processes,
            args=["--log-level", log_level],
            timeout=max(120.0, n / 200),
            env_extra=env_extra,
        )
        left = _remaining(app)
        extra: dict[str, t.Any] = {}
        if accounts:
            from . import ourapp

            with app.app_context():
                touched = ourapp.db.session.scalar(
                    ourapp.db.select(ourapp.db.func.sum(ourapp.Account.touched))
                )
                failed = ourapp.db.session.scalar(
                    ourapp.db.select(ourapp.db.func.count())
                    .select_from(ourapp.queue.Task)
                    .where(ourapp.queue.Task.failed_nr > 0)
                )
            extra = {"touched": touched, "failed_rows": failed}
        from . import ourapp

        with app.app_context():
            ourapp.db.engine.dispose()
    if left:
        raise RuntimeError(f"{left} tasks left after the workers exited")
    end = max(r["end"] for r in results)
    return {"rate": n / (end - start), **extra}


# -- case 3: pickup latency and idle CPU ----------------------------------------


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10.0)
    return sock


def _sample_latency(
    sock: socket.socket, enqueue: t.Callable[[int], None], samples: int
) -> dict[str, float]:
    rng = random.Random(samples)
    latencies = []
    for i in range(samples + 2):
        # A random gap, so the worker is found at every point of its idle wait.
        time.sleep(rng.uniform(0.05, 0.25))
        sent = time.monotonic()
        enqueue(i)
        while True:
            message = sock.recv(256).decode().split()
            if int(message[0]) == i:
                break
        if i >= 2:  # the first two warm connections and caches
            latencies.append((float(message[1]) - sent) * 1000)
    return {"p50_ms": percentile(latencies, 0.5), "p95_ms": percentile(latencies, 0.95)}


def latency(
    *,
    workdir: Path,
    samples: int,
    mode: str,
    engine: str = "sqlite",
    pg_url: str | None = None,
    pg_commit: str | None = None,
) -> dict[str, t.Any]:
    """Enqueue-to-start latency of a task: ``mode="embedded"`` runs the worker as a
    thread of this (the enqueuing) process, ``"process"`` in ``flask queue work``."""
    from . import ourapp

    sock = _udp_socket()
    port = sock.getsockname()[1]
    with _database(workdir, engine, pg_url) as uri:
        app = _app(uri, BENCH_TASK="latency", BENCH_UDP_PORT=port)

        def enqueue(i: int) -> None:
            with app.app_context():
                ourapp.queue.perform("bench_task", {"i": i})

        if mode == "embedded":
            ourapp.queue.start_worker(app)
            try:
                result = _sample_latency(sock, enqueue, samples)
            finally:
                ourapp.queue.stop_worker(app, timeout=10)
        else:
            barrier_dir = workdir / "barrier"
            barrier_dir.mkdir()
            env = _env(
                workdir,
                uri,
                BENCH_TASK="latency",
                BENCH_UDP_PORT=port,
                BENCH_PG_COMMIT=pg_commit,
            )
            log = workdir / "worker.log"
            worker = procs.start([*WORK, "--log-level", "WARNING"], env, log)
            try:
                Barrier(barrier_dir).wait_ready(1, [worker])
                Barrier(barrier_dir).go()
                result = _sample_latency(sock, enqueue, samples)
            finally:
                procs.stop([worker])
        with app.app_context():
            ourapp.db.engine.dispose()
    return result


def idle_cpu(
    *,
    workdir: Path,
    seconds: float,
    engine: str = "sqlite",
    pg_url: str | None = None,
) -> dict[str, t.Any]:
    """CPU used by an idle ``flask queue work`` process, in % of one core."""
    with _database(workdir, engine, pg_url) as uri:
        app = _app(uri, BENCH_TASK="noop")
        from . import ourapp

        with app.app_context():
            ourapp.db.engine.dispose()
        barrier_dir = workdir / "barrier"
        barrier_dir.mkdir()
        env = _env(workdir, uri, BENCH_TASK="noop")
        log = workdir / "worker.log"
        worker = procs.start([*WORK, "--log-level", "WARNING"], env, log)
        try:
            Barrier(barrier_dir).wait_ready(1, [worker])
            Barrier(barrier_dir).go()
            return {"cpu_pct": measure_idle_cpu(worker.pid, seconds)}
        finally:
            procs.stop([worker])


def measure_idle_cpu(pid: int, seconds: float) -> float:
    """% of one core that process ``pid`` (all its threads) used over ``seconds``,
    after one second to settle into its idle rhythm."""
    time.sleep(min(1.0, seconds))
    before = cpu_seconds(pid)
    start = time.monotonic()
    time.sleep(seconds)
    used = cpu_seconds(pid) - before
    return 100.0 * used / (time.monotonic() - start)


def cpu_seconds(pid: int) -> float:
    """CPU seconds every thread of ``pid`` has run so far: the scheduler's
    nanosecond counters (``/proc/PID/task/TID/schedstat``), as ``/proc/PID/stat``
    counts only in 10 ms ticks, too coarse for an idle process."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue  # the thread ended meanwhile
        return total / 1e9
    except FileNotFoundError:
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5) (utime, stime); the split dropped the first two.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- case 5: scale ----------------------------------------------------------------


def fill_names(app: t.Any, names: int, due: int, spread: bool, *, vacuum: bool) -> None:
    """Enqueue ``due`` tasks of the first of ``names`` task names, or
    ``spread`` unevenly over them (name ``i`` gets a share proportional to
    ``1 / (i + 1)``); ``vacuum`` runs ``VACUUM ANALYZE`` afterwards, as
    PostgreSQL's autovacuum does to a table that grew this much."""
    from . import ourapp

    all_names = [TASK_NAME] + [f"{TASK_NAME}_{i:02d}" for i in range(names - 1)]
    rng = random.Random(12)
    weights = [1 / (i + 1) for i in range(names)]
    with app.app_context():
        for start in range(0, due, 10_000):
            count = min(10_000, due - start)
            chosen = (
                rng.choices(all_names, weights, k=count)
                if spread
                else [TASK_NAME] * count
            )
            by_name: dict[str, list[t.Any]] = {}
            for i, name in enumerate(chosen):
                by_name.setdefault(name, []).append({"i": start + i})
            for name, items in by_name.items():
                ourapp.queue.perform_many(name, items)
        if vacuum:
            with ourapp.db.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as conn:
                conn.exec_driver_sql("VACUUM ANALYZE plainqueue_tasks")


def names(
    *,
    workdir: Path,
    names: int,
    due: int,
    spread: bool,
    take: int,
    batch: int = 1,
    engine: str = "sqlite",
    pg_url: str | None = None,
) -> dict[str, t.Any]:
    """Steady worker throughput (``flask queue work --burst``) over the first
    ``take`` of ``due`` tasks with ``names`` task names registered: all of the
    tasks of one name, or ``spread`` unevenly over every name (name ``i`` gets a
    share proportional to ``1 / (i + 1)``). The clock runs from the first fifth
    of ``take`` to the last, as in :func:`scale`."""
    with _database(workdir, engine, pg_url) as uri:
        app = _app(uri, BENCH_TASK="count", BENCH_BATCH=batch, BENCH_NAMES=names)
        from . import ourapp

        fill_names(app, names, due, spread, vacuum=engine == "postgresql")
        with app.app_context():
            ourapp.db.engine.dispose()
        rates = _steady_rate(
            workdir,
            uri,
            take,
            timeout=max(120.0, take / 50),
            BENCH_BATCH=batch,
            BENCH_NAMES=names,
        )
    return {"rate": rates["rate"]}


def scale(
    *,
    workdir: Path,
    waiting: int,
    dead: int,
    take: int,
    batch: int,
    cache_dir: str,
    succeeded: int = 0,
    keep: float = 0.0,
) -> dict[str, t.Any]:
    """Steady claim throughput over the first ``take`` of ``waiting`` tasks, with
    ``dead`` dead rows and ``succeeded`` kept succeeded rows (expiring in a day)
    beside them, the worker keeping what it runs for ``keep`` seconds: the
    clock runs from the end of the first fifth (when SQLite's page cache is
    warm) to the last. The big table is built once per run and copied."""
    template = Path(cache_dir) / f"scale-{waiting}-{dead}-{succeeded}.db"
    db_path = workdir / "bench.db"
    uri = f"sqlite:///{db_path}"
    if not template.exists():
        building = template.with_suffix(".building")
        if building.exists():
            building.unlink()
        tmp_uri = f"sqlite:///{building}"
        app = _app(tmp_uri, BENCH_TASK="count")
        from . import ourapp

        with app.app_context():
            ourapp.db.engine.dispose()
        if dead:
            fill_sqlite_queue(building, dead, status="dead")
        expires = datetime.datetime.now(UTC) + datetime.timedelta(days=1)
        for start in range(0, succeeded, 250_000):
            fill_sqlite_queue(
                building,
                min(250_000, succeeded - start),
                status="succeeded",
                run_at=expires,
                start=start,
            )
        for start in range(0, waiting, 250_000):
            fill_sqlite_queue(building, min(250_000, waiting - start), start=start)
        building.rename(template)
    shutil.copyfile(template, db_path)
    # The copy's pages are dirty in the OS cache: write them out now, or the
    # worker's first checkpoint (an fsync of the whole file) pays for the copy.
    fd = os.open(db_path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return _steady_rate(
        workdir,
        uri,
        take,
        timeout=max(120.0, take / 100),
        BENCH_BATCH=batch,
        BENCH_KEEP=keep,
    )


def _steady_rate(
    workdir: Path, uri: str, take: int, *, timeout: float, **env: t.Any
) -> dict[str, float]:
    """One ``flask queue work --burst`` that stops after ``take`` tasks: its rate
    from the first fifth of them to the last (``rate``, once SQLite's page cache
    and PostgreSQL's plans are warm) and from its start (``cold_rate``)."""
    began, results = _run_workers(
        workdir,
        uri,
        processes=1,
        args=["--log-level", "WARNING"],
        timeout=timeout,
        env_extra={
            "BENCH_TASK": "count",
            "BENCH_STOP_AFTER": take,
            "BENCH_WARM": take // 5,
            **env,
        },
        burst=True,
    )
    stopped, warm = results[0]["stopped_at"], results[0]["warm_at"]
    if stopped is None or warm is None:
        raise RuntimeError(
            f"worker stopped after {results[0]['count']} tasks, not {take}"
        )
    return {
        "rate": (take - take // 5) / (stopped - warm),
        "cold_rate": take / (stopped - began),
    }


# -- case 6: memory -------------------------------------------------------------------


def memory(*, workdir: Path, n: int, batch: int) -> dict[str, t.Any]:
    """Worker RSS when it starts and after ``n`` tasks (sampled every n/10)."""
    uri = f"sqlite:///{workdir / 'bench.db'}"
    app = _app(uri, BENCH_TASK="count")
    _fill(app, uri, n)
    start, results = _run_workers(
        workdir,
        uri,
        processes=1,
        args=["--log-level", "WARNING"],
        timeout=max(120.0, n / 200),
        env_extra={
            "BENCH_TASK": "count",
            "BENCH_BATCH": batch,
            "BENCH_RSS_EVERY": max(1, n // 10),
        },
    )
    from .impl_huey import memory_result

    return memory_result(results[0], n, start)
