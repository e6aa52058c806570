"""The hot paths in one process, for profiling: ``python -m benchmarks.hotpath``.

Unlike the suite (real processes, barriers, rounds) this runs the worker's
claim/run loop (``Worker.drain``), the claim transaction alone, the batch
dispatch alone, ``perform`` and ``perform_many`` in the calling process, so a
profiler sees only them::

    python -m benchmarks.hotpath drain --batch 1 --n 10000
    python -m benchmarks.hotpath perform --n 5000 --pyinstrument
    py-spy record -o drain.svg -- python -m benchmarks.hotpath drain --batch 100 --n 50000

``--pg-url URL`` runs on a fresh PostgreSQL database instead of SQLite.
``--other-task`` registers a second task definition (the claim then has to find
which name is next); ``--unknown N`` adds N due rows of a name no worker knows.
Set ``PYTHONPATH`` to a patched copy of ``flask_plainqueue`` to measure a change.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
import tempfile
import time
import typing as t
from pathlib import Path

MODES = ("drain", "claim", "batch", "attempt", "perform", "perform_many")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hotpath", description=__doc__.split("\n")[0]
    )
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--other-task", action="store_true")
    parser.add_argument("--unknown", type=int, default=0)
    parser.add_argument(
        "--pyinstrument", action="store_true", help="print a pyinstrument profile"
    )
    parser.add_argument(
        "--pg-url",
        default="",
        help="run on a fresh database on this PostgreSQL server instead of SQLite",
    )
    args = parser.parse_args(argv)
    if args.pg_url and args.unknown:
        parser.error("--unknown works on SQLite only")
    with contextlib.ExitStack() as stack:
        if args.pg_url:
            from . import pg

            uri, _ = stack.enter_context(pg.fresh_database(args.pg_url))
        else:
            work = Path(tempfile.mkdtemp(prefix="plainqueue-hotpath-"))
            uri = f"sqlite:///{work / 'bench.db'}"
        return _main(args, uri)
    return 1  # pragma: no cover - the with statement returns


def _main(args: argparse.Namespace, uri: str) -> int:
    db_path = Path(uri.removeprefix("sqlite:///"))
    os.environ.update(BENCH_DB_URI=uri, BENCH_TASK="noop", BENCH_BATCH=str(args.batch))
    from . import ourapp
    from .common import fill_sqlite_queue

    app = ourapp.create_app()
    queue = ourapp.queue
    if args.other_task:
        queue.task(name="other_task")(lambda data: None)
    with app.app_context():
        ourapp.db.create_all()
        ourapp.db.engine.dispose()
    if args.unknown:
        fill_sqlite_queue(db_path, args.unknown, name="unknown_task")
    if args.mode not in ("perform", "perform_many"):
        if uri.startswith("sqlite"):
            fill_sqlite_queue(db_path, args.n)
        else:
            with app.app_context():
                for first in range(0, args.n, 10_000):
                    chunk: list[t.Any] = [
                        {"i": i} for i in range(first, min(args.n, first + 10_000))
                    ]
                    queue.perform_many("bench_task", chunk)

    from flask_plainqueue.batches import BatchRunner
    from flask_plainqueue.claims import ClaimedTask
    from flask_plainqueue.claims import ClaimRequest
    from flask_plainqueue.claims import Outcomes
    from flask_plainqueue.runner import TaskRunner

    worker = queue.worker(app)
    store = queue.store(app)
    # The worker's own batch runner and attempt runner, built alike, so the
    # batch and attempt modes run them without the claim around them.
    runner = TaskRunner(app, worker.parts, worker.id, worker.clock)
    batches = BatchRunner(runner, worker.leases, worker.parts, 1)
    definition = queue.registry.get("bench_task")
    names = sorted(queue.registry.names())
    sizes = {name: args.batch for name in names}
    lease = datetime.timedelta(seconds=60)

    def run() -> int:
        if args.mode == "drain":
            return int(worker.drain())
        if args.mode == "claim":
            outcomes, done = Outcomes(), 0
            while True:
                now = datetime.datetime.now(datetime.timezone.utc)
                tasks = store.claim(
                    ClaimRequest(
                        owner=worker.id,
                        names=names,
                        batch_sizes=sizes,
                        now=now,
                        until=now + lease,
                    ),
                    outcomes,
                )
                if not tasks:
                    return done
                outcomes.completed.extend((task.id, task.attempts) for task in tasks)
                done += len(tasks)
        if args.mode in ("batch", "attempt"):
            tasks = [
                ClaimedTask(i, "bench_task", '{"i": 1}', 1, 0, 0)
                for i in range(args.batch)
            ]
            outcomes, done = Outcomes(), 0
            while done < args.n:
                if args.mode == "batch":
                    batches.run(definition, tasks, outcomes)
                else:
                    for task in tasks:
                        runner.attempt(definition, task)
                outcomes.clear()
                done += len(tasks)
            return done
        items: list[t.Any] = [{"i": i} for i in range(args.n)]
        with app.app_context():
            if args.mode == "perform":
                for item in items:
                    queue.perform("bench_task", item)
            else:
                queue.perform_many("bench_task", items)
        return int(args.n)

    profiler: t.Any = None
    if args.pyinstrument:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    start = time.perf_counter()
    done = run()
    elapsed = time.perf_counter() - start
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    batches.close()
    runner.close()
    worker.close()
    queue.forget_worker(worker)
    import flask_plainqueue

    print(
        f"{args.mode} batch={args.batch}: {done} in {elapsed:.3f}s = {done / elapsed:,.0f}/s,"
        f" {1e6 * elapsed / max(done, 1):.1f} us each ({flask_plainqueue.__file__})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
