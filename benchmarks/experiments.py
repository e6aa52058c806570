"""The experiments behind "What bounds the targets not met" in
``docs/benchmarks.rst``: each changes or strips one thing and measures what it
costs. ``python -m benchmarks.experiments MODE``:

``no-pool-wake [hotpath args]``
    ``benchmarks.hotpath`` with the pool thread a helped batch wakes left
    asleep, e.g. ``no-pool-wake drain --batch 100 --n 200000`` (compare with
    ``python -m benchmarks.hotpath drain --batch 100 --n 200000``).
``python-only BATCH``
    One worker cycle with every SQL statement replaced by a no-op cursor:
    the Python around the SQL, per task.
``round-trips URL``
    psycopg against PostgreSQL, back to back and after 100 ms idle: ``SELECT
    1``, an autocommitted ``INSERT``, and a claim-like transaction in three
    round trips and in one pipelined one.
``claim-cost URL``
    The PostgreSQL claim alone (batch 1, each claim settling the last), with
    25 names and 100,000 due tasks of one name or spread unevenly, against 1
    name and 1,000 due, in alternating fresh processes; the worker's commits
    do not wait for the WAL flush here, so the flush's noise does not hide the
    statements' cost (target 1).
``pg-pickup URL``
    Our pickup on PostgreSQL traced from both processes on the monotonic clock
    they share: the enqueue, the NOTIFY's arrival, the claim, the task's start.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import runpy
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import typing as t
from pathlib import Path


def no_pool_wake(args: list[str]) -> None:
    from flask_plainqueue import pool

    real = pool.TaskPool.run_batch

    def run_batch(
        self: t.Any, fn: t.Any, calls: t.Any, *, helped: bool = False
    ) -> t.Any:
        if helped:  # the claiming thread runs them all: no thread is woken
            return pool.Batch(fn, calls, chained=True)
        return real(self, fn, calls, helped=helped)

    pool.TaskPool.run_batch = run_batch  # type: ignore[method-assign]
    sys.argv = ["benchmarks.hotpath", *args]
    runpy.run_module("benchmarks.hotpath", run_name="__main__")


def python_only(batch: int) -> None:
    work = Path(tempfile.mkdtemp())
    os.environ.update(
        BENCH_DB_URI=f"sqlite:///{work / 'bench.db'}",
        BENCH_TASK="noop",
        BENCH_BATCH=str(batch),
    )
    from flask_plainqueue import sqlite
    from flask_plainqueue.claims import Outcomes

    from . import ourapp

    app = ourapp.create_app()
    with app.app_context():
        ourapp.db.create_all()
    rows = [(i, "bench_task", '{"i": 1}', 1, 0, 0) for i in range(1, batch + 1)]

    class Cursor:
        def execute(self, sql: str, args: t.Any = None) -> Cursor:
            return self

        def executemany(self, sql: str, args: t.Any) -> Cursor:
            list(args)
            return self

        def fetchall(self) -> list[tuple[t.Any, ...]]:
            return rows

        def fetchone(self) -> tuple[t.Any, ...]:
            return rows[0]

    @contextlib.contextmanager
    def cursor(self: t.Any) -> t.Iterator[Cursor]:
        yield Cursor()

    if not hasattr(sqlite.SQLiteBackend, "_cursor"):
        raise SystemExit("SQLiteBackend._cursor is gone: update this experiment")
    sqlite.SQLiteBackend._cursor = cursor  # type: ignore[method-assign,assignment]
    worker = ourapp.queue.worker(app)
    outcomes = Outcomes()
    n = max(1, 100_000 // batch)
    with worker.store.pinned():
        worker._swept = datetime.datetime.now(datetime.timezone.utc)
        if worker._cycle(outcomes, None) != batch:
            raise SystemExit("a cycle ran no batch: the no-op cursor was not used")
        for _ in range(3):
            seconds = timeit.timeit(lambda: worker._cycle(outcomes, None), number=n)
            print(
                f"batch {batch}: {seconds / n / batch * 1e6:.1f} us of Python per task"
            )


def _median_ms(fn: t.Callable[[], object], idle: float, n: int = 40) -> float:
    times = []
    for _ in range(n):
        time.sleep(idle)
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[3:])


def round_trips(url: str) -> None:
    import psycopg

    url = url.replace("postgresql+psycopg://", "postgresql://")
    tx = psycopg.connect(url)
    auto = psycopg.connect(url, autocommit=True)
    auto.execute("CREATE TABLE IF NOT EXISTS bench_round_trips (id serial, x int)")
    claim = (
        "UPDATE bench_round_trips SET x = x + 1 WHERE id = ANY(ARRAY("
        "SELECT id FROM bench_round_trips ORDER BY id LIMIT 1"
        " FOR UPDATE SKIP LOCKED)) RETURNING id"
    )
    auto.execute("INSERT INTO bench_round_trips (x) VALUES (0)")

    def three() -> None:
        cur = tx.cursor()
        with tx.pipeline():
            cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cur.execute(claim).fetchall()
        tx.commit()

    def one() -> None:
        cur = tx.cursor()
        with tx.pipeline():
            cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            claimed = tx.cursor()
            claimed.execute(claim)
            tx.commit()
            claimed.fetchall()

    cases = {
        "SELECT 1": lambda: auto.execute("SELECT 1").fetchall(),
        "autocommitted INSERT": lambda: auto.execute(
            "INSERT INTO bench_round_trips (x) VALUES (1)"
        ),
        "claim, three round trips": three,
        "claim, one pipelined round trip": one,
    }
    try:
        for name, fn in cases.items():
            hot, idle = _median_ms(fn, 0.0), _median_ms(fn, 0.1)
            print(f"{name}: {hot:.2f} ms back to back, {idle:.2f} ms after 100 ms idle")
    finally:
        auto.execute("DROP TABLE bench_round_trips")


def pg_pickup(url: str) -> None:
    from . import impl_ours

    work = Path(tempfile.mkdtemp())
    sock = impl_ours._udp_socket()
    port = sock.getsockname()[1]
    with impl_ours._database(work, "postgresql", url) as uri:
        app = impl_ours._app(uri, BENCH_TASK="latency", BENCH_UDP_PORT=port)
        from . import ourapp

        trace = work / "trace"
        env = {
            **os.environ,
            "BENCH_DB_URI": uri,
            "BENCH_TASK": "latency",
            "BENCH_UDP_PORT": str(port),
        }
        env.pop("BENCH_DIR", None)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.experiments",
                "_traced-worker",
                str(trace),
            ],
            env=env,
        )
        try:
            while not trace.exists() or "ready" not in trace.read_text():
                time.sleep(0.1)
            samples = []
            rng = random.Random(1)
            for i in range(42):
                time.sleep(rng.uniform(0.05, 0.25))
                start = time.monotonic()
                with app.app_context():
                    ourapp.queue.perform("bench_task", {"i": i})
                performed = time.monotonic()
                while True:
                    message = sock.recv(256).decode().split()
                    if int(message[0]) == i:
                        break
                samples.append((start, performed, float(message[1])))
        finally:
            worker.terminate()
            worker.wait(30)
            with app.app_context():
                ourapp.db.engine.dispose()
    lines = [line.split() for line in trace.read_text().splitlines()]
    notified = [float(w[1]) for w in lines if w[0] == "notify"]
    claims = [(float(w[1]), float(w[2])) for w in lines if w[0] == "claim"]
    phases: dict[str, list[float]] = {}
    for start, performed, began in samples[2:]:
        heard = [x for x in notified if start <= x <= began]
        claim = [c for c in claims if start <= c[0] and c[1] <= began]
        if not heard or not claim:
            continue
        for name, value in (
            ("perform", performed - start),
            ("NOTIFY heard, from perform's return", heard[0] - performed),
            ("claim start, from the NOTIFY", claim[-1][0] - heard[0]),
            ("claim", claim[-1][1] - claim[-1][0]),
            ("task start, from the claim", began - claim[-1][1]),
            ("total", began - start),
        ):
            phases.setdefault(name, []).append(value * 1000)
    for name, values in phases.items():
        print(f"{name}: p50 {statistics.median(values):.2f} ms (n={len(values)})")


#: The layouts of ``claim-cost``: (task names, due tasks, spread over the names).
_LAYOUTS = {
    "1 name, 1,000 due": (1, 1_000, False),
    "25 names, 100,000 due, all of one name": (25, 100_000, False),
    "25 names, 100,000 due, spread unevenly": (25, 100_000, True),
}


def claim_cost(url: str, rounds: int = 6) -> None:
    results: dict[str, list[float]] = {layout: [] for layout in _LAYOUTS}
    for r in range(rounds):
        order = list(_LAYOUTS) if r % 2 == 0 else list(reversed(_LAYOUTS))
        for layout in order:
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.experiments", "_claims", url]
                + [layout],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results[layout].append(float(out.split()[-1]))
    base = statistics.median(results[next(iter(_LAYOUTS))])
    for layout, values in results.items():
        median = statistics.median(values)
        print(
            f"{layout}: claim p50 {median:.0f} us"
            f" (rounds {', '.join(f'{v:.0f}' for v in values)});"
            f" {base / median:.2f}x the first"
        )


def _claims(url: str, layout: str, take: int = 1_000) -> None:
    from flask_plainqueue.claims import ClaimRequest
    from flask_plainqueue.claims import Outcomes

    from . import impl_ours

    names, due, spread = _LAYOUTS[layout]
    with impl_ours._database(Path(tempfile.mkdtemp()), "postgresql", url) as uri:
        app = impl_ours._app(
            uri, BENCH_TASK="noop", BENCH_NAMES=names, BENCH_PG_COMMIT="off"
        )
        from . import ourapp

        impl_ours.fill_names(app, names, due, spread, vacuum=True)
        all_names = sorted(ourapp.queue.registry.names())
        with app.app_context():
            store = ourapp.queue.store(app)
            outcomes, times = Outcomes(), []
            for _ in range(take):
                now = datetime.datetime.now(datetime.timezone.utc)
                request = ClaimRequest(
                    owner="experiment",
                    names=all_names,
                    batch_sizes=dict.fromkeys(all_names, 1),
                    now=now,
                    until=now + datetime.timedelta(seconds=60),
                    sweep=False,
                )
                started = time.perf_counter()
                tasks = store.claim(request, outcomes)
                times.append(time.perf_counter() - started)
                outcomes.completed.extend((task.id, task.attempts) for task in tasks)
            ourapp.db.engine.dispose()
    # The first fifth warms caches and prepares the statements.
    print(statistics.median(times[take // 5 :]) * 1e6)


def _traced_worker(trace: str) -> None:
    from flask_plainqueue import store
    from flask_plainqueue import worker as worker_module

    from . import ourapp

    out = open(trace, "w", buffering=1)  # noqa: SIM115 - the process's life
    real_change = worker_module.Worker.on_change
    real_claim = store.Store.claim

    def on_change(self: t.Any, payload: str | None) -> None:
        out.write(f"notify {time.monotonic()!r}\n")
        real_change(self, payload)

    def claim(self: t.Any, request: t.Any, outcomes: t.Any = None) -> t.Any:
        start = time.monotonic()
        tasks = real_claim(self, request, outcomes)
        if tasks:
            out.write(f"claim {start!r} {time.monotonic()!r}\n")
        return tasks

    worker_module.Worker.on_change = on_change  # type: ignore[method-assign]
    store.Store.claim = claim  # type: ignore[method-assign]
    app = ourapp.create_app()
    worker = ourapp.queue.worker(app)
    threading.Timer(2.0, lambda: out.write("ready\n")).start()
    worker.run()


def main() -> None:
    mode, *args = sys.argv[1:] or ["--help"]
    if mode == "no-pool-wake":
        no_pool_wake(args)
    elif mode == "python-only":
        python_only(int(args[0]) if args else 1)
    elif mode == "round-trips":
        round_trips(args[0] if args else "postgresql://postgres@127.0.0.1:5432/test")
    elif mode == "pg-pickup":
        pg_pickup(args[0] if args else "postgresql://postgres@127.0.0.1:5432/test")
    elif mode == "claim-cost":
        claim_cost(args[0] if args else "postgresql://postgres@127.0.0.1:5432/test")
    elif mode == "_claims":
        _claims(args[0], args[1])
    elif mode == "_traced-worker":
        _traced_worker(args[0])
    else:
        print(__doc__)


if __name__ == "__main__":
    main()
