"""The benchmark suite runs end to end with a tiny N, so it cannot rot (the
report's arithmetic alone is in ``tests/unit/test_benchmarks_report.py``).

No timings are asserted: the numbers live in docs/benchmarks/. Peers that are not
installed here (Huey, procrastinate, pgqueuer) and PostgreSQL rows without a
server are skipped by the suite itself, and the test checks they are reported as
skipped rather than failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    # benchmarks/ is not installed (`pip install -e .` maps flask_plainqueue
    # only), so import it from the checkout, as the suite's subprocesses do.
    monkeypatch.syspath_prepend(str(ROOT))


def run_suite(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_whole_suite_with_tiny_n(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = run_suite(
        out,
        "--n",
        "40",
        "--rounds",
        "1",
        "--samples",
        "2",
        "--idle-seconds",
        "0.3",
        "--mem-n",
        "200",
        "--scale-waiting",
        "400",
        "--scale-take",
        "50",
        "--kept",
        "400",
        "--names-due",
        "300",
        "--names-take",
        "100",
        "--pg-url",
        os.environ.get("TEST_POSTGRESQL_URL", ""),
        "--note",
        "smoke test",
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads((out / "results.json").read_text())
    from benchmarks.cases import CASES

    assert {s["case"] for s in data["scenarios"]} == set(CASES)
    for scenario in data["scenarios"]:
        # One round cannot disagree with itself: no scenario was rerun.
        assert len(scenario["load_average"]) == 3
        assert scenario["disagreement"] == [0.0], scenario["key"]
        errors = [r for runs in scenario["runs"].values() for r in runs if "error" in r]
        assert not errors, (scenario["key"], errors)
        first = scenario["contenders"][0]["label"]
        if first in scenario["skipped"]:
            # Only PostgreSQL rows may skip ours, and only without a server.
            assert "postgresql" in scenario["key"] or "pg" in scenario["key"]
            assert not os.environ.get("TEST_POSTGRESQL_URL"), scenario["skipped"][first]
            continue
        (result,) = scenario["runs"][first]
        for metric in scenario["metrics"]:
            assert result[metric] >= 0, (scenario["key"], metric)
        for contender in scenario["contenders"]:
            label = contender["label"]
            assert scenario["runs"][label] or label in scenario["skipped"], (
                scenario["key"],
                label,
            )
    markdown = (out / "results.md").read_text()
    for scenario in data["scenarios"]:
        assert f"## {scenario['title']}" in markdown
    assert "## Targets (issue 12)" in markdown
    assert markdown.count("Load average at the start: ") == len(data["scenarios"])
    assert "smoke test" in markdown
    assert "python -m benchmarks" in markdown
    _check_rst((out / "results.inc").read_text())
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (out / "results.png").exists()
    else:
        assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_rst(text: str) -> None:
    """The reST fragment the docs page includes parses without a warning."""
    docutils_core = pytest.importorskip("docutils.core")
    doctree = docutils_core.publish_doctree(
        text,
        settings_overrides={
            "report_level": 2,
            "halt_level": 5,
            "warning_stream": False,
        },
    )
    messages = [n for n in doctree.findall() if n.tagname == "system_message"]
    assert not messages, [m.astext() for m in messages]


@pytest.mark.timeout(300)
def test_kept_case_with_tiny_n(tmp_path: Path) -> None:
    """The kept case alone (1,000,000 kept succeeded rows by default, run here
    with 2,000): both of its rows are measured."""
    out = tmp_path / "report"
    proc = run_suite(
        out,
        "--cases",
        "kept",
        "--rounds",
        "1",
        "--kept",
        "2000",
        "--scale-take",
        "200",
        "--no-chart",
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads((out / "results.json").read_text())
    (scenario,) = data["scenarios"]
    assert scenario["key"] == "kept-b1"
    labels = [c["label"] for c in scenario["contenders"]]
    assert labels == ["2,000 succeeded kept + 200 waiting", "200 waiting"]
    for label in labels:
        (result,) = scenario["runs"][label]
        assert "error" not in result and result["rate"] > 0, (label, result)


@pytest.mark.timeout(300)
def test_stream_case_with_tiny_n(tmp_path: Path) -> None:
    """The stream case alone, with 3 samples: the SQLite row is measured (and
    the PostgreSQL one where a server runs)."""
    out = tmp_path / "report"
    proc = run_suite(out, "--cases", "stream", "--rounds", "1", "--samples", "3")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads((out / "results.json").read_text())
    (scenario,) = data["scenarios"]
    assert scenario["key"] == "stream"
    (sqlite,) = scenario["runs"]["SQLite (change probe)"]
    assert "error" not in sqlite and 0 < sqlite["p50_ms"] <= sqlite["p95_ms"]
    if os.environ.get("TEST_POSTGRESQL_URL"):
        (postgresql,) = scenario["runs"]["PostgreSQL (NOTIFY)"]
        assert "error" not in postgresql, postgresql
        assert 0 < postgresql["p50_ms"] <= postgresql["p95_ms"]


def test_rejects_unknown_case(tmp_path: Path) -> None:
    proc = run_suite(tmp_path, "--cases", "enqueue,nonsense")
    assert proc.returncode == 2
    assert "unknown case(s) nonsense" in proc.stderr


def test_the_raw_reference_loop_claims_through_the_claim_index(tmp_path: Path) -> None:
    """The raw claim/delete loop is the physical limit of our design only while
    its claim is ours: twice a change of the claim index (``claim_rank``,
    then ``lease_owner IS NULL``) left it sorting or scanning the whole
    backlog on every claim, ten times slower, and every ratio against it
    wrong."""
    import sqlite3

    from conftest import create_test_app

    from benchmarks import rawworker

    path = tmp_path / "bench.db"
    app, db, _ = create_test_app(f"sqlite:///{path}", tmp_path / "instance")
    with app.app_context():
        db.create_all()
        db.engine.dispose()
    conn = sqlite3.connect(path)
    try:
        plan = [
            row[-1]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + rawworker.SQLITE_CLAIM,
                ("o", "2000-01-01", "2000-01-01", "n", 1),
            )
        ]
    finally:
        conn.close()
    assert any("ix_plainqueue_tasks_claim" in detail for detail in plan), plan
    assert not any(
        detail.startswith("SCAN plainqueue_tasks") or "TEMP B-TREE" in detail
        for detail in plan
    ), plan


def test_the_python_only_experiment_runs_a_cycle_without_sql() -> None:
    """``benchmarks.experiments python-only`` backs a figure in
    docs/benchmarks.rst: it must still drive the worker's cycle (its no-op
    cursor stands in for the backend's driver cursor)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.experiments", "python-only", "1000"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = [
        line for line in result.stdout.splitlines() if "of Python per task" in line
    ]
    assert len(lines) == 3, result.stdout
