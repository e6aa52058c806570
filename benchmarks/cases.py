"""The cases of issue 6, as scenarios: what is compared side by side, and how each
contender is measured (a function of :mod:`benchmarks.impl_ours`, ``impl_huey``,
``impl_raw`` or ``impl_pg``, run by :mod:`benchmarks.measure` in a fresh process)."""

from __future__ import annotations

import dataclasses
import typing as t

#: Case names for ``--cases``, in report order.
CASES = (
    "enqueue",
    "process",
    "latency",
    "idle",
    "realistic",
    "scale",
    "kept",
    "names",
    "stream",
    "memory",
)

#: metric -> (unit, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "rate": ("tasks/s", True),
    "p50_ms": ("ms p50", False),
    "p95_ms": ("ms p95", False),
    "cpu_pct": ("% CPU", False),
    "rss_start_mib": ("MiB RSS at start", False),
    "rss_end_mib": ("MiB RSS at end", False),
    "rss_growth_mib": ("MiB RSS growth", False),
}


@dataclasses.dataclass(frozen=True)
class Contender:
    """One row of a scenario: a label and how to measure it."""

    label: str
    func: str
    params: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    #: ``ours``, ``peer`` or ``reference`` (a raw-driver loop).
    kind: str = "peer"


@dataclasses.dataclass(frozen=True)
class Scenario:
    case: str
    key: str
    title: str
    metrics: tuple[str, ...]
    contenders: tuple[Contender, ...]
    #: The label the per-round ratio is taken against (``None``: no ratio column).
    primary: str | None = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Settings:
    n: int
    rounds: int
    mem_n: int
    scale_waiting: int
    scale_take: int
    kept: int
    names_due: int
    names_take: int
    samples: int
    idle_seconds: float
    pg_url: str | None
    cache_dir: str


OURS = "benchmarks.impl_ours"
HUEY = "benchmarks.impl_huey"
RAW = "benchmarks.impl_raw"
PGQ = "benchmarks.impl_pg"
#: The opt-in mode whose commits of the worker's own writes do not wait for
#: PostgreSQL's WAL flush (docs/scaling.rst says what it risks).
PG_COMMIT_OFF = "PLAINQUEUE_POSTGRESQL_SYNCHRONOUS_COMMIT='off'"
STREAM = "benchmarks.impl_stream"


def _huey(label_suffix: str, func: str, **params: t.Any) -> list[Contender]:
    return [
        Contender(
            f"Huey SqliteStorage, synchronous=FULL (its default){label_suffix}",
            f"{HUEY}:{func}",
            {"sync": "FULL", **params},
        ),
        Contender(
            f"Huey SqliteStorage, synchronous=NORMAL{label_suffix}",
            f"{HUEY}:{func}",
            {"sync": "NORMAL", **params},
        ),
    ]


def scenarios(s: Settings) -> list[Scenario]:
    n = s.n
    pg = {"engine": "postgresql", "pg_url": s.pg_url}
    ours = "flask-plainqueue"
    out = [
        Scenario(
            "enqueue",
            "enqueue-one",
            "SQLite: `perform` one by one (one commit each)",
            ("rate",),
            (
                Contender(
                    ours, f"{OURS}:enqueue", {"n": n // 2, "mode": "one"}, "ours"
                ),
                *_huey("", "enqueue", n=n // 2),
                Contender(
                    "raw sqlite3 INSERT + COMMIT",
                    f"{RAW}:insert",
                    {"n": n // 2, "mode": "one"},
                    "reference",
                ),
            ),
            primary=ours,
        ),
        Scenario(
            "enqueue",
            "enqueue-many",
            "SQLite: `perform_many` (one transaction)",
            ("rate",),
            (
                Contender(ours, f"{OURS}:enqueue", {"n": n, "mode": "many"}, "ours"),
                Contender(
                    "raw sqlite3 executemany",
                    f"{RAW}:insert",
                    {"n": n, "mode": "many"},
                    "reference",
                ),
            ),
            primary=ours,
            note="Huey has no bulk enqueue.",
        ),
        Scenario(
            "enqueue",
            "enqueue-one-pg",
            "PostgreSQL: `perform` one by one",
            ("rate",),
            (
                Contender(
                    ours, f"{OURS}:enqueue", {"n": n // 10, "mode": "one", **pg}, "ours"
                ),
                Contender(
                    "procrastinate `defer`",
                    f"{PGQ}:procrastinate_enqueue",
                    {"n": n // 10, "mode": "one", **pg},
                ),
                Contender(
                    "pgqueuer `enqueue`",
                    f"{PGQ}:pgqueuer_enqueue",
                    {"n": n // 10, "mode": "one", **pg},
                ),
                Contender(
                    "raw psycopg INSERT + COMMIT",
                    f"{RAW}:insert",
                    {"n": n // 10, "mode": "one", **pg},
                    "reference",
                ),
            ),
            primary=ours,
            note="N/10 tasks: every commit waits for PostgreSQL's WAL flush (synchronous_commit=on).",
        ),
        Scenario(
            "enqueue",
            "enqueue-many-pg",
            "PostgreSQL: `perform_many`",
            ("rate",),
            (
                Contender(
                    ours, f"{OURS}:enqueue", {"n": n, "mode": "many", **pg}, "ours"
                ),
                Contender(
                    "procrastinate `batch_defer`",
                    f"{PGQ}:procrastinate_enqueue",
                    {"n": n, "mode": "many", **pg},
                ),
                Contender(
                    "pgqueuer `enqueue` (lists)",
                    f"{PGQ}:pgqueuer_enqueue",
                    {"n": n, "mode": "many", **pg},
                ),
                Contender(
                    "raw psycopg executemany",
                    f"{RAW}:insert",
                    {"n": n, "mode": "many", **pg},
                    "reference",
                ),
            ),
            primary=ours,
        ),
        Scenario(
            "process",
            "process-b1",
            "SQLite: one worker process, batch_size=1",
            ("rate",),
            (
                Contender(ours, f"{OURS}:process", {"n": n // 2, "batch": 1}, "ours"),
                Contender(
                    f"{ours}, MALLOC_TRIM_THRESHOLD_=64 MiB",
                    f"{OURS}:process",
                    {"n": n // 2, "batch": 1, "malloc_trim": 64 * 2**20},
                    "ours",
                ),
                Contender(
                    "raw sqlite3 claim/delete loop",
                    f"{RAW}:process",
                    {"n": n // 2, "batch": 1},
                    "reference",
                ),
                *_huey(", 1 thread worker", "process", n=n // 2),
            ),
            primary=ours,
        ),
        Scenario(
            "process",
            "process-b5",
            "SQLite: one worker process, batch_size=5",
            ("rate",),
            (
                Contender(ours, f"{OURS}:process", {"n": n, "batch": 5}, "ours"),
                Contender(
                    "raw sqlite3 claim/delete loop",
                    f"{RAW}:process",
                    {"n": n, "batch": 5},
                    "reference",
                ),
            ),
            primary=ours,
        ),
        Scenario(
            "process",
            "process-b100",
            "SQLite: one worker process, batch_size=100",
            ("rate",),
            (
                Contender(ours, f"{OURS}:process", {"n": n, "batch": 100}, "ours"),
                Contender(
                    f"{ours}, --log-level INFO (a log line per start/finish)",
                    f"{OURS}:process",
                    {"n": n, "batch": 100, "log_level": "INFO"},
                    "ours",
                ),
                Contender(
                    "raw sqlite3 claim/delete loop",
                    f"{RAW}:process",
                    {"n": n, "batch": 100},
                    "reference",
                ),
                *_huey(", 1 thread worker (no batches)", "process", n=n // 2),
            ),
            primary=ours,
        ),
        Scenario(
            "process",
            "process-procs",
            "SQLite: batch_size=100, several worker processes",
            ("rate",),
            (
                Contender(
                    f"{ours}, 1 process",
                    f"{OURS}:process",
                    {"n": n, "batch": 100},
                    "ours",
                ),
                Contender(
                    f"{ours}, 2 processes",
                    f"{OURS}:process",
                    {"n": n, "batch": 100, "processes": 2},
                    "ours",
                ),
                Contender(
                    f"{ours}, 4 processes",
                    f"{OURS}:process",
                    {"n": n, "batch": 100, "processes": 4},
                    "ours",
                ),
            ),
            primary=f"{ours}, 1 process",
            note="On a 2-core machine more processes share the same two cores and one write lock.",
        ),
        Scenario(
            "process",
            "process-pg-b1",
            "PostgreSQL: one worker process, batch_size=1",
            ("rate",),
            (
                Contender(
                    ours, f"{OURS}:process", {"n": n // 5, "batch": 1, **pg}, "ours"
                ),
                Contender(
                    f"{ours}, {PG_COMMIT_OFF}",
                    f"{OURS}:process",
                    {"n": n // 5, "batch": 1, "pg_commit": "off", **pg},
                    "ours",
                ),
                Contender(
                    "raw psycopg claim/delete loop",
                    f"{RAW}:process",
                    {"n": n // 5, "batch": 1, **pg},
                    "reference",
                ),
                Contender(
                    "pgqueuer, batch_size=1",
                    f"{PGQ}:pgqueuer_process",
                    {"n": n // 5, "batch": 1, **pg},
                ),
            ),
            primary=ours,
        ),
        Scenario(
            "process",
            "process-pg-b100",
            "PostgreSQL: one worker process, batch_size=100",
            ("rate",),
            (
                Contender(
                    ours, f"{OURS}:process", {"n": n, "batch": 100, **pg}, "ours"
                ),
                Contender(
                    f"{ours}, {PG_COMMIT_OFF}",
                    f"{OURS}:process",
                    {"n": n, "batch": 100, "pg_commit": "off", **pg},
                    "ours",
                ),
                Contender(
                    "raw psycopg claim/delete loop",
                    f"{RAW}:process",
                    {"n": n, "batch": 100, **pg},
                    "reference",
                ),
                Contender(
                    "pgqueuer, batch_size=100",
                    f"{PGQ}:pgqueuer_process",
                    {"n": n, "batch": 100, **pg},
                ),
                Contender(
                    "procrastinate, concurrency=1",
                    f"{PGQ}:procrastinate_process",
                    {"n": n // 10, **pg},
                ),
            ),
            primary=ours,
        ),
        Scenario(
            "latency",
            "latency-sqlite",
            "SQLite: pickup latency (enqueue to task start)",
            ("p50_ms", "p95_ms"),
            (
                Contender(
                    f"{ours}, embedded worker (a thread of the enqueuing process)",
                    f"{OURS}:latency",
                    {"samples": s.samples, "mode": "embedded"},
                    "ours",
                ),
                Contender(
                    f"{ours}, `flask queue work` in another process",
                    f"{OURS}:latency",
                    {"samples": s.samples, "mode": "process"},
                    "ours",
                ),
                Contender(
                    "Huey consumer in another process (polling), synchronous=FULL",
                    f"{HUEY}:latency",
                    {"samples": s.samples, "sync": "FULL"},
                ),
            ),
            primary=f"{ours}, embedded worker (a thread of the enqueuing process)",
            note="Huey has no embedded worker; its consumer polls (every 0.1 s,"
            " growing by 1.15x up to 10 s while idle).",
        ),
        Scenario(
            "latency",
            "latency-pg",
            "PostgreSQL: pickup latency, worker in another process",
            ("p50_ms", "p95_ms"),
            (
                Contender(
                    f"{ours}, `flask queue work`",
                    f"{OURS}:latency",
                    {"samples": s.samples, "mode": "process", **pg},
                    "ours",
                ),
                Contender(
                    f"{ours}, `flask queue work`, {PG_COMMIT_OFF}",
                    f"{OURS}:latency",
                    {"samples": s.samples, "mode": "process", "pg_commit": "off", **pg},
                    "ours",
                ),
                Contender(
                    "pgqueuer (LISTEN/NOTIFY)",
                    f"{PGQ}:pgqueuer_latency",
                    {"samples": s.samples, **pg},
                ),
                Contender(
                    "procrastinate (LISTEN/NOTIFY)",
                    f"{PGQ}:procrastinate_latency",
                    {"samples": s.samples, **pg},
                ),
            ),
            primary=f"{ours}, `flask queue work`",
        ),
        Scenario(
            "idle",
            "idle-sqlite",
            f"SQLite: CPU of an idle worker over {s.idle_seconds:g} s",
            ("cpu_pct",),
            (
                Contender(
                    f"{ours}, `flask queue work`",
                    f"{OURS}:idle_cpu",
                    {"seconds": s.idle_seconds},
                    "ours",
                ),
                Contender(
                    "Huey consumer, 1 thread worker",
                    f"{HUEY}:idle_cpu",
                    {"seconds": s.idle_seconds, "sync": "FULL"},
                ),
            ),
            primary=f"{ours}, `flask queue work`",
        ),
        Scenario(
            "idle",
            "idle-pg",
            f"PostgreSQL: CPU of an idle worker over {s.idle_seconds:g} s",
            ("cpu_pct",),
            (
                Contender(
                    f"{ours}, `flask queue work`",
                    f"{OURS}:idle_cpu",
                    {"seconds": s.idle_seconds, **pg},
                    "ours",
                ),
                Contender(
                    "pgqueuer",
                    f"{PGQ}:pgqueuer_idle",
                    {"seconds": s.idle_seconds, **pg},
                ),
                Contender(
                    "procrastinate",
                    f"{PGQ}:procrastinate_idle",
                    {"seconds": s.idle_seconds, **pg},
                ),
            ),
            primary=f"{ours}, `flask queue work`",
        ),
        Scenario(
            "realistic",
            "realistic-b1",
            "SQLite: realistic task (reads and writes one row of the app's table via db.session), batch_size=1",
            ("rate",),
            (
                Contender(
                    ours,
                    f"{OURS}:process",
                    {"n": n // 4, "batch": 1, "task": "account", "accounts": 1000},
                    "ours",
                ),
                Contender(
                    "Huey SqliteStorage, synchronous=NORMAL, 1 thread worker",
                    f"{HUEY}:process",
                    {"n": n // 4, "sync": "NORMAL", "accounts": 1000},
                ),
            ),
            primary=ours,
            note="Huey's queue is its own file; the app's table is in the app's database.",
        ),
        Scenario(
            "realistic",
            "realistic-b5",
            "SQLite: realistic task, batch_size=5 (tasks of a batch run concurrently)",
            ("rate",),
            (
                Contender(
                    ours,
                    f"{OURS}:process",
                    {"n": n // 4, "batch": 5, "task": "account", "accounts": 1000},
                    "ours",
                ),
                Contender(
                    "Huey SqliteStorage, synchronous=NORMAL, 5 thread workers",
                    f"{HUEY}:process",
                    {"n": n // 4, "sync": "NORMAL", "workers": 5, "accounts": 1000},
                ),
            ),
            primary=ours,
        ),
    ]
    for batch in (100, 1):
        out.append(
            Scenario(
                "scale",
                f"scale-b{batch}",
                f"SQLite: claim throughput, batch_size={batch}, first {s.scale_take:,} tasks",
                ("rate",),
                (
                    Contender(
                        f"{s.scale_waiting:,} waiting + {s.scale_waiting:,} dead",
                        f"{OURS}:scale",
                        {
                            "waiting": s.scale_waiting,
                            "dead": s.scale_waiting,
                            "take": s.scale_take,
                            "batch": batch,
                            "cache_dir": s.cache_dir,
                        },
                        "ours",
                    ),
                    Contender(
                        f"{s.scale_take:,} waiting",
                        f"{OURS}:scale",
                        {
                            "waiting": s.scale_take,
                            "dead": 0,
                            "take": s.scale_take,
                            "batch": batch,
                            "cache_dir": s.cache_dir,
                        },
                        "ours",
                    ),
                ),
                primary=f"{s.scale_waiting:,} waiting + {s.scale_waiting:,} dead",
            )
        )
    # Kept succeeded rows (keep_succeeded) must not slow claims: the worker
    # keeps what it runs in both rows, so only the stored rows differ.
    big = f"{s.kept:,} succeeded kept + {s.scale_take:,} waiting"
    out.append(
        Scenario(
            "kept",
            "kept-b1",
            f"SQLite: claim throughput with kept succeeded tasks, batch_size=1,"
            f" first {s.scale_take:,} tasks",
            ("rate",),
            tuple(
                Contender(
                    label,
                    f"{OURS}:scale",
                    {
                        "waiting": s.scale_take,
                        "dead": 0,
                        "succeeded": succeeded,
                        "keep": 3600.0,
                        "take": s.scale_take,
                        "batch": 1,
                        "cache_dir": s.cache_dir,
                    },
                    "ours",
                )
                for label, succeeded in (
                    (big, s.kept),
                    (f"{s.scale_take:,} waiting", 0),
                )
            ),
            primary=big,
            note="Target: at least 0.9x the rate without kept rows.",
        )
    )
    for engine, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        where = {"engine": engine, "pg_url": s.pg_url} if engine != "sqlite" else {}
        base = "1 name, 1,000 due"
        out.append(
            Scenario(
                "names",
                f"names-{engine}",
                f"{label}: worker throughput, batch_size=1, with many task names and"
                f" a backlog (first {s.names_take:,} tasks)",
                ("rate",),
                (
                    Contender(
                        base,
                        f"{OURS}:names",
                        {
                            "names": 1,
                            "due": 1_000,
                            "spread": False,
                            "take": min(1_000, s.names_take),
                            **where,
                        },
                        "ours",
                    ),
                    Contender(
                        f"25 names, {s.names_due:,} due, all of one name",
                        f"{OURS}:names",
                        {
                            "names": 25,
                            "due": s.names_due,
                            "spread": False,
                            "take": s.names_take,
                            **where,
                        },
                        "ours",
                    ),
                    Contender(
                        f"25 names, {s.names_due:,} due, spread unevenly",
                        f"{OURS}:names",
                        {
                            "names": 25,
                            "due": s.names_due,
                            "spread": True,
                            "take": s.names_take,
                            **where,
                        },
                        "ours",
                    ),
                ),
                primary=base,
                note="Target (issue 12): the two 25-name rows at >= 0.9x the first.",
            )
        )
    out.append(
        Scenario(
            "stream",
            "stream",
            "`queue.stream`: `report_progress` to the SSE client over HTTP",
            ("p50_ms", "p95_ms"),
            (
                Contender(
                    "SQLite (change probe)",
                    f"{STREAM}:stream_latency",
                    {"samples": s.samples},
                    "ours",
                ),
                Contender(
                    "PostgreSQL (NOTIFY)",
                    f"{STREAM}:stream_latency",
                    {"samples": s.samples, **pg},
                    "ours",
                ),
            ),
            note="Target: p95 at most 250 ms. Each report is spaced beyond the"
            " progress interval (0.5 s), so it is written at once.",
        )
    )
    out.append(
        Scenario(
            "memory",
            "memory",
            f"SQLite: worker RSS, start and after {s.mem_n:,} tasks",
            ("rss_start_mib", "rss_end_mib", "rss_growth_mib"),
            (
                Contender(
                    f"{ours}, batch_size=100",
                    f"{OURS}:memory",
                    {"n": s.mem_n, "batch": 100},
                    "ours",
                ),
                Contender(
                    "Huey consumer, 1 thread worker, synchronous=NORMAL",
                    f"{HUEY}:memory",
                    {"n": s.mem_n, "sync": "NORMAL"},
                ),
            ),
            primary=f"{ours}, batch_size=100",
            note="Growth: the highest RSS seen after the first tenth of the tasks minus RSS at that tenth.",
        )
    )
    return out
