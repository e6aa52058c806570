"""The benchmark report's arithmetic, on hand-made results (no database, no
subprocess; the suite itself runs in
``tests/processes/test_benchmarks_smoke.py``)."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    # benchmarks/ is not installed (`pip install -e .` maps flask_plainqueue
    # only), so import it from the checkout.
    monkeypatch.syspath_prepend(str(ROOT))


def test_ratio_is_taken_per_round() -> None:
    from benchmarks import report

    data = {
        "scenarios": [
            {
                "key": "k",
                "case": "process",
                "title": "t",
                "metrics": ["rate"],
                "primary": "ours",
                "note": "",
                "skipped": {},
                "contenders": [
                    {"label": "ours", "kind": "ours"},
                    {"label": "peer", "kind": "peer"},
                ],
                "runs": {
                    "ours": [{"rate": 10.0, "round": 0}, {"rate": 30.0, "round": 1}],
                    "peer": [{"rate": 5.0, "round": 0}, {"error": "x", "round": 1}],
                },
            }
        ]
    }
    rows = {r.label: r for r in report.rows(data)}
    assert rows["ours"].median == 20.0
    assert rows["peer"].ratios == [2.0]  # round 1 of the peer failed: no ratio for it


def _scenario(
    key: str, rates: dict[str, list[float]], metric: str = "rate"
) -> dict[str, t.Any]:
    """A scenario of made-up rounds; the first label is the primary (ours)."""
    labels = list(rates)
    return {
        "key": key,
        "case": key.split("-")[0],
        "title": key,
        "metrics": [metric],
        "primary": labels[0],
        "note": "",
        "skipped": {},
        "contenders": [
            {"label": label, "kind": "ours" if i == 0 else "peer"}
            for i, label in enumerate(labels)
        ],
        "runs": {
            label: [{metric: v, "round": i} for i, v in enumerate(values)]
            for label, values in rates.items()
        },
    }


def _targets(*scenarios: dict[str, t.Any]) -> dict[str, tuple[str, bool | None]]:
    from benchmarks import report

    data = {"scenarios": list(scenarios)}
    by = {(r.scenario["key"], r.label, r.metric): r for r in report.rows(data)}
    return {
        target.what: target.check(by)
        for target in report.TARGETS
        if target.check(by)[1] is not None
    }


OURS = "flask-plainqueue"
PG_COMMIT_OFF = "PLAINQUEUE_POSTGRESQL_SYNCHRONOUS_COMMIT='off'"
HUEY_WORKER = "Huey SqliteStorage, synchronous=NORMAL, 1 thread worker"


@pytest.mark.parametrize(
    ("ours", "huey", "shown", "met"),
    [
        # Ours is 1.2x Huey in every round: met. The ratio is ours / Huey,
        # not Huey / ours (which would be 0.83x).
        ([12_000.0, 6_000.0, 9_000.0], [10_000.0, 5_000.0, 7_500.0], "1.20×", True),
        ([8_000.0, 4_000.0, 6_000.0], [10_000.0, 5_000.0, 7_500.0], "0.80×", False),
    ],
)
def test_target_2_is_ours_over_huey(
    ours: list[float], huey: list[float], shown: str, met: bool
) -> None:
    targets = _targets(
        _scenario(
            "process-b1",
            {
                OURS: ours,
                "raw sqlite3 claim/delete loop": [20_000.0] * 3,
                HUEY_WORKER: huey,
            },
        )
    )
    text, ok = targets["2. worker, batch_size=1 (SQLite)"]
    assert (text, ok) == (f"{shown} Huey (NORMAL)", met)
    # Only target 2 was measured: the others are left out.
    assert list(targets) == ["2. worker, batch_size=1 (SQLite)"]


def test_target_2_takes_the_median_of_per_round_ratios() -> None:
    # Per round: 2.0, 0.5, 0.9 -> median 0.9 (the medians' ratio would be 1.0).
    targets = _targets(
        _scenario(
            "process-b1", {OURS: [20.0, 5.0, 9.0], HUEY_WORKER: [10.0, 10.0, 10.0]}
        )
    )
    assert targets["2. worker, batch_size=1 (SQLite)"] == ("0.90× Huey (NORMAL)", False)


@pytest.mark.parametrize(
    ("one", "many", "met_one", "met_many"),
    [
        ([15_000.0], [120_000.0], True, True),
        ([9_000.0], [90_000.0], False, False),
    ],
)
def test_target_4(
    one: list[float], many: list[float], met_one: bool, met_many: bool
) -> None:
    targets = _targets(
        _scenario(
            "enqueue-one",
            {
                OURS: one,
                "Huey SqliteStorage, synchronous=FULL (its default)": [5_000.0],
                "Huey SqliteStorage, synchronous=NORMAL": [10_000.0],
            },
        ),
        _scenario("enqueue-many", {OURS: many, "raw sqlite3 executemany": [200_000.0]}),
    )
    text, ok = targets["4. `perform` one by one (SQLite)"]
    assert ok is met_one and text == f"{one[0] / 10_000:.2f}× Huey (NORMAL)"
    text, ok = targets["4. `perform_many` (SQLite)"]
    assert ok is met_many and text == f"{many[0] / 200_000:.2f}× raw"


@pytest.mark.parametrize(
    ("ours", "shown", "met"),
    [([30_000.0, 32_000.0], "1.55×", True), ([20_000.0, 22_000.0], "1.05×", False)],
)
def test_target_6_is_ours_over_pgqueuer(
    ours: list[float], shown: str, met: bool
) -> None:
    targets = _targets(
        _scenario(
            "process-pg-b100",
            {
                OURS: ours,
                "raw psycopg claim/delete loop": [60_000.0, 60_000.0],
                "pgqueuer, batch_size=100": [20_000.0, 20_000.0],
                "procrastinate, concurrency=1": [500.0, 500.0],
            },
        )
    )
    assert targets["6. worker, batch_size=100 (PostgreSQL)"] == (
        f"{shown} pgqueuer",
        met,
    )


def test_target_3_needs_both_ratios() -> None:
    rates = {
        OURS: [40_000.0],
        "raw sqlite3 claim/delete loop": [100_000.0],
        f"{HUEY_WORKER} (no batches)": [10_000.0],
    }
    targets = _targets(_scenario("process-b100", rates))
    assert targets["3. worker, batch_size=100 (SQLite)"] == (
        "0.40× raw; 4.00× Huey (NORMAL)",
        True,
    )
    rates[OURS] = [20_000.0]  # 0.2x raw, 2x Huey
    targets = _targets(_scenario("process-b100", rates))
    assert targets["3. worker, batch_size=100 (SQLite)"][1] is False


def test_target_7_memory_end_rss_is_information_only() -> None:
    def memory(end: float, growth: float) -> dict[str, t.Any]:
        scenario = _scenario("memory", {f"{OURS}, batch_size=100": [0.0]})
        scenario["metrics"] = ["rss_start_mib", "rss_end_mib", "rss_growth_mib"]
        scenario["runs"] = {
            f"{OURS}, batch_size=100": [
                {
                    "rss_start_mib": 57.0,
                    "rss_end_mib": end,
                    "rss_growth_mib": growth,
                    "round": 0,
                }
            ]
        }
        return scenario

    what = "7. worker RSS"
    assert _targets(memory(90.0, 1.0))[what] == (
        "1.00 MiB growth; 90.0 MiB at end",
        True,
    )
    assert _targets(memory(58.0, 6.0))[what][1] is False


def test_target_5_and_7_scale() -> None:
    targets = _targets(
        _scenario(
            "latency-sqlite",
            {
                f"{OURS}, embedded worker (a thread of the enqueuing process)": [0.5],
                f"{OURS}, `flask queue work` in another process": [1.5],
            },
            metric="p50_ms",
        ),
        _scenario("idle-sqlite", {f"{OURS}, `flask queue work`": [0.6]}, "cpu_pct"),
        _scenario(
            "latency-pg",
            {
                f"{OURS}, `flask queue work`": [3.5],
                f"{OURS}, `flask queue work`, {PG_COMMIT_OFF}": [2.5],
            },
            "p50_ms",
        ),
        # The big table first: its ratio is big / small.
        _scenario("scale-b100", {"big": [9_000.0], "small": [10_000.0]}),
        _scenario("scale-b1", {"big": [8_500.0], "small": [10_000.0]}),
    )
    assert targets["5. cross-process pickup p50 (SQLite)"] == (
        "1.50 ms; 0.60 % idle CPU",
        False,
    )
    assert targets["5. pickup p50 (PostgreSQL)"] == ("3.50 ms", False)
    assert targets[f"5. pickup p50 (PostgreSQL), opt-in {PG_COMMIT_OFF}"] == (
        "2.50 ms",
        True,
    )
    assert targets["7. 1M waiting vs 1k waiting (batch_size=100)"][1] is True
    assert targets["7. 1M waiting vs 1k waiting (batch_size=1)"][1] is False


def test_labels_of_the_targets_exist_in_the_cases() -> None:
    """Every label a target looks up is a contender of that scenario."""
    from benchmarks import cases
    from benchmarks import report

    settings = cases.Settings(
        n=100,
        rounds=1,
        mem_n=100,
        scale_waiting=1_000_000,
        scale_take=5_000,
        kept=100,
        names_due=100_000,
        names_take=1_000,
        samples=2,
        idle_seconds=1.0,
        pg_url=None,
        cache_dir="/nonexistent",
    )
    scenarios = []
    for s in cases.scenarios(settings):
        scenario = _scenario(s.key, {c.label: [1.0, 1.0] for c in s.contenders})
        scenario["metrics"] = list(s.metrics)
        scenario["runs"] = {
            c.label: [{m: 1.0 for m in s.metrics} | {"round": i} for i in range(2)]
            for c in s.contenders
        }
        scenarios.append(scenario)
    data = {"scenarios": scenarios}
    by = {(r.scenario["key"], r.label, r.metric): r for r in report.rows(data)}
    unmeasured = [t.what for t in report.TARGETS if t.check(by)[1] is None]
    assert unmeasured == []
    assert len(report.TARGETS) == 15


@pytest.mark.parametrize(
    ("rounds", "spread", "disagree"),
    [
        ({"a": [100.0, 119.0, 110.0], "b": [50.0, 55.0]}, 0.19, False),
        ({"a": [100.0, 110.0], "b": [50.0, 61.0, 55.0]}, 0.22, True),
        # Exactly 20 % is not more than 20 %.
        ({"a": [100.0, 120.0]}, 0.2, False),
        # One round (or one per contender) cannot disagree.
        ({"a": [100.0], "b": [1.0]}, 0.0, False),
        # All rounds at 0 agree; a 0 beside anything else is unbounded.
        ({"a": [0.0, 0.0]}, 0.0, False),
        ({"a": [0.0, 0.3]}, None, True),
    ],
)
def test_rounds_disagree(
    rounds: dict[str, list[float]], spread: float | None, disagree: bool
) -> None:
    from benchmarks import report

    runs = {
        label: [{"rate": v, "round": i} for i, v in enumerate(values)]
        for label, values in rounds.items()
    }
    got = report.disagreement(runs, "rate")
    assert got == (None if spread is None else pytest.approx(spread))
    assert report.rounds_disagree(runs, "rate") is disagree


def test_rounds_disagree_ignores_failed_rounds_and_other_metrics() -> None:
    from benchmarks import report

    runs: dict[str, list[dict[str, t.Any]]] = {
        "a": [
            {"p50_ms": 1.0, "p95_ms": 9.0, "round": 0},
            {"p50_ms": 1.1, "p95_ms": 2.0, "round": 1},
            {"error": "timed out", "round": 2},
        ],
        "skipped": [],
    }
    assert not report.rounds_disagree(runs, "p50_ms")
    assert report.rounds_disagree(runs, "p95_ms")


def test_load_average_and_rerun_under_the_scenario() -> None:
    from benchmarks import report

    first = _scenario("enqueue-many", {OURS: [1.0], "raw sqlite3 executemany": [2.0]})
    first |= {"load_average": [0.5, 0.25, 1.0], "disagreement": [0.05]}
    rerun = _scenario("enqueue-one", {OURS: [1.0]})
    rerun |= {
        "load_average": [1.5, 1.0, 0.75],
        "disagreement": [0.356, 0.1],
        "rerun_load_average": [2.0, 1.0, 0.5],
    }
    still = _scenario("process-b1", {OURS: [1.0]})
    still |= {"load_average": [1.0, 1.0, 1.0], "disagreement": [None, 0.25]}
    old = _scenario("process-b5", {OURS: [1.0]})  # results.json before issue 12
    tables = report.build(_data(first, rerun, still, old))
    md = tables.markdown
    assert "Load average at the start: 0.50, 0.25, 1.00." in md
    assert "Load average at the start: 1.50, 1.00, 0.75. Rounds disagreed by 36 %" in md
    assert (
        "Rounds disagreed by 36 % (> 20 %); rerun (load average then: 2.00, 1.00,"
        " 0.50); the table shows the rerun's rounds." in md
    )
    assert (
        "Rounds disagreed by an unbounded amount (a round measured 0) (> 20 %); rerun;"
        " the table shows the rerun's rounds. They still disagree after a rerun (25 %)."
    ) in md
    assert md.count("still disagree") == 1
    assert md.count("Load average at the start") == 3
    assert "rerun (load average" in tables.rst


def _data(*scenarios: dict[str, t.Any]) -> dict[str, t.Any]:
    """A whole results.json around ``scenarios``, as the suite writes it."""
    return {
        "command": "python -m benchmarks",
        "started": "2026-01-01T00:00:00+00:00",
        "duration_s": 60.0,
        "settings": {
            "n": 100,
            "rounds": 1,
            "mem_n": 100,
            "scale_waiting": 1000,
            "samples": 2,
            "idle_seconds": 1.0,
        },
        "machine": {
            "cpu": "cpu",
            "cores": 2,
            "memory": "1 GiB",
            "os": "Linux",
            "tmp_filesystem": "ext4",
            "load_average_at_start": [0.0, 0.0, 0.0],
            "python": "3",
            "sqlite": "3",
            "postgresql": "15",
            "versions": {},
        },
        "note": "",
        "scenarios": list(scenarios),
    }


def test_numbered_targets_are_not_rst_lists() -> None:
    """ "4. `perform_many`" in a reST table cell would start an enumerated list."""
    from benchmarks import report

    docutils_core = pytest.importorskip("docutils.core")
    rst = report.build(
        _data(
            _scenario("enqueue-many", {OURS: [1.0], "raw sqlite3 executemany": [2.0]})
        )
    ).rst
    assert "4\\. ``perform_many`` (SQLite)" in rst
    doctree = docutils_core.publish_doctree(
        rst,
        settings_overrides={
            "report_level": 1,
            "halt_level": 5,
            "warning_stream": False,
        },
    )
    assert not list(doctree.findall(lambda n: n.tagname == "enumerated_list"))
    messages = [n for n in doctree.findall() if n.tagname == "system_message"]
    assert not messages, [m.astext() for m in messages]
