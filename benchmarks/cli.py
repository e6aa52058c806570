"""``python -m benchmarks``: run the chosen cases round by round and write the
report (Markdown, reST fragment, PNG chart, raw JSON) to ``--out``.

Every measurement runs in a fresh process on a fresh database (file or
PostgreSQL database). Within a round every contender of a scenario runs once; the
order flips every round so that drift of the machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from . import report
from .cases import CASES
from .cases import Scenario
from .cases import scenarios
from .cases import Settings
from .procs import child_env
from .procs import ROOT

DEFAULT_OUT = ROOT / "docs" / "benchmarks"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="flask-plainqueue side by side with Huey, procrastinate, pgqueuer"
        " and raw-driver reference loops.",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated, from: {', '.join(CASES)} (default: all)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenario keys to keep (e.g. process-b100)",
    )
    parser.add_argument(
        "--n",
        type=int,
        default=20_000,
        help="tasks per throughput measurement (default 20000)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument(
        "--mem-n",
        type=int,
        default=1_000_000,
        help="tasks the memory case runs (default 1000000)",
    )
    parser.add_argument(
        "--scale-waiting",
        type=int,
        default=1_000_000,
        help="waiting (and as many dead) tasks in the big scale table",
    )
    parser.add_argument(
        "--scale-take",
        type=int,
        default=5_000,
        help="tasks processed in each scale measurement; the small table"
        " holds just these (default 5000)",
    )
    parser.add_argument(
        "--kept",
        type=int,
        default=1_000_000,
        help="kept succeeded tasks in the kept case's table (default 1000000)",
    )
    parser.add_argument(
        "--names-due",
        type=int,
        default=100_000,
        help="due tasks in the names case's backlog (default 100000)",
    )
    parser.add_argument(
        "--names-take",
        type=int,
        default=1_000,
        help="tasks processed in each names measurement (default 1000: the"
        " 1-name row has 1,000 due tasks)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=40,
        help="pickup-latency samples per measurement (default 40)",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="how long idle CPU is measured (default 10)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="PostgreSQL server for the PostgreSQL rows (a database per measurement"
        " is created and dropped on it); '' skips them",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="where the report goes (default docs/benchmarks)",
    )
    parser.add_argument(
        "--note",
        default="",
        help="a line for the report, e.g. what else ran on the machine",
    )
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.add_argument(
        "--rerender",
        action="store_true",
        help="measure nothing: write the report again from --out/results.json",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds one measurement may take before it counts as failed",
    )
    args = parser.parse_args(argv)
    unknown = set(filter(None, args.cases.split(","))) - set(CASES)
    if unknown:
        parser.error(
            f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}"
        )
    if args.rounds < 1 or args.n < 10:
        parser.error("--rounds must be 1 or more and --n 10 or more")
    return args


def measure(
    func: str, params: dict[str, t.Any], workdir: Path, timeout: float
) -> dict[str, t.Any]:
    """Run one measurement in a fresh process; its metrics, or ``skip``/``error``."""
    spec = json.dumps({"func": func, "params": params, "workdir": str(workdir)})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.measure", spec],
            env=child_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCH-RESULT "):
            return t.cast(
                dict[str, t.Any], json.loads(line.removeprefix("BENCH-RESULT "))
            )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return {"error": f"exit {proc.returncode}: " + " | ".join(lines[-6:])}


def run(args: argparse.Namespace, log: t.Callable[[str], None]) -> dict[str, t.Any]:
    work = Path(tempfile.mkdtemp(prefix="plainqueue-bench-"))
    settings = Settings(
        n=args.n,
        rounds=args.rounds,
        mem_n=args.mem_n,
        scale_waiting=args.scale_waiting,
        scale_take=args.scale_take,
        kept=args.kept,
        names_due=args.names_due,
        names_take=args.names_take,
        samples=args.samples,
        idle_seconds=args.idle_seconds,
        pg_url=args.pg_url or None,
        cache_dir=str(work / "cache"),
    )
    (work / "cache").mkdir()
    cases = [c for c in CASES if c in set(args.cases.split(","))]
    only = set(filter(None, args.only.split(",")))
    chosen = [
        s
        for s in scenarios(settings)
        if s.case in cases and (not only or s.key in only)
    ]
    started = time.time()
    results: list[dict[str, t.Any]] = []
    try:
        for scenario in chosen:
            results.append(run_scenario(scenario, settings, work, args.timeout, log))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "command": command_line(),
        "started": datetime.datetime.fromtimestamp(
            started, datetime.timezone.utc
        ).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "settings": {
            k: v for k, v in vars(settings).items() if k not in ("cache_dir", "pg_url")
        },
        "machine": report.machine(),
        "note": args.note,
        "scenarios": results,
    }


def run_scenario(
    scenario: Scenario,
    settings: Settings,
    work: Path,
    timeout: float,
    log: t.Callable[[str], None],
) -> dict[str, t.Any]:
    """All rounds of one scenario; once more when they disagree (issue 12: a
    contender's first metric varies by more than :data:`report.DISAGREE`), in
    which case the second set of rounds is the one kept."""
    log(f"== {scenario.key}: {scenario.title}")
    began = time.monotonic()
    load = [round(x, 2) for x in os.getloadavg()]
    metric = scenario.metrics[0]
    runs, skipped = run_rounds(scenario, settings, work, timeout, log, {})
    seen = [report.disagreement(runs, metric)]
    rerun_load: list[float] | None = None
    # The memory case is one long run per round (a rerun doubles it), and its
    # RSS is checked for flatness within a round, not across rounds.
    if scenario.case != "memory" and report.rounds_disagree(runs, metric):
        log(
            f"   {scenario.key}: rounds disagreed by {report.percent(seen[0])}"
            f" (> {report.DISAGREE * 100:.0f} %); rerunning its rounds"
        )
        rerun_load = [round(x, 2) for x in os.getloadavg()]
        runs, skipped = run_rounds(scenario, settings, work, timeout, log, skipped)
        seen.append(report.disagreement(runs, metric))
        if report.rounds_disagree(runs, metric):
            log(
                f"   {scenario.key}: still disagree after a rerun"
                f" ({report.percent(seen[1])}); keeping the rerun's rounds"
            )
    elapsed = time.monotonic() - began
    log(f"   ({elapsed:.0f} s)")
    return {
        "elapsed_s": round(elapsed, 1),
        "key": scenario.key,
        "case": scenario.case,
        "title": scenario.title,
        "metrics": list(scenario.metrics),
        "primary": scenario.primary,
        "note": scenario.note,
        "contenders": [
            {
                "label": c.label,
                "kind": c.kind,
                "params": {
                    k: v
                    for k, v in c.params.items()
                    if k not in ("pg_url", "cache_dir")
                },
            }
            for c in scenario.contenders
        ],
        "runs": runs,
        "skipped": skipped,
        "load_average": load,
        # max / min - 1 of the first metric, of each set of rounds run (a second
        # one when the first disagreed); None: a round measured 0.
        "disagreement": [None if x is None else round(x, 4) for x in seen],
        **({"rerun_load_average": rerun_load} if rerun_load else {}),
    }


def run_rounds(
    scenario: Scenario,
    settings: Settings,
    work: Path,
    timeout: float,
    log: t.Callable[[str], None],
    skipped: dict[str, str],
) -> tuple[dict[str, list[dict[str, t.Any]]], dict[str, str]]:
    """One set of rounds: each contender once per round, the order reversed
    every other round. Contenders in ``skipped`` are not run (a skip is for
    good: a peer not installed, no PostgreSQL server)."""
    runs: dict[str, list[dict[str, t.Any]]] = {c.label: [] for c in scenario.contenders}
    skipped = dict(skipped)
    for rnd in range(settings.rounds):
        order = list(scenario.contenders)
        if rnd % 2:
            order.reverse()
        for contender in order:
            if contender.label in skipped:
                continue
            index = scenario.contenders.index(contender)
            workdir = work / scenario.key / f"round{rnd}-contender{index}"
            result = measure(contender.func, contender.params, workdir, timeout)
            if "error" in result:
                # One retry, in a fresh directory: a shared machine's PostgreSQL may
                # be restarting under someone else's test. A second error counts.
                log(
                    f"   round {rnd + 1}: {contender.label}: retrying after: {result['error'][-300:]}"
                )
                shutil.rmtree(workdir, ignore_errors=True)
                time.sleep(2)
                result = measure(contender.func, contender.params, workdir, timeout)
                result["retried"] = True
            result["round"] = rnd
            shutil.rmtree(workdir, ignore_errors=True)
            if "skip" in result:
                skipped[contender.label] = result["skip"]
                log(f"   {contender.label}: skipped: {result['skip']}")
                continue
            runs[contender.label].append(result)
            shown = ", ".join(
                f"{m}={result[m]:.4g}" for m in scenario.metrics if m in result
            ) or result.get("error", "")
            log(f"   round {rnd + 1}: {contender.label}: {shown}")
    return runs, skipped


def command_line() -> str:
    return "python -m benchmarks " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(message: str) -> None:
        print(message, flush=True)

    if args.rerender:
        data = json.loads((args.out / "results.json").read_text())
    else:
        data = run(args, log)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    tables = report.build(data)
    (args.out / "results.md").write_text(tables.markdown)
    (args.out / "results.inc").write_text(tables.rst)
    wrote = ["results.md", "results.inc", "results.json"]
    if not args.no_chart:
        try:
            report.chart(data, args.out / "results.png")
            wrote.append("results.png")
        except ImportError:
            log(
                "matplotlib is not installed: no chart (pip install -r requirements/bench.txt)"
            )
    log(f"wrote {', '.join(wrote)} to {args.out}")
    errors = [
        (s["key"], label, r["error"])
        for s in data["scenarios"]
        for label, rs in s["runs"].items()
        for r in rs
        if "error" in r
    ]
    for key, label, error in errors:
        log(f"ERROR {key} / {label}: {error}")
    return 1 if errors else 0
