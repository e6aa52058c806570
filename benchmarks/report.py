"""Turning the rounds into the report: medians, min-max, per-round ratios, the
issue's targets, a machine description, Markdown and reST tables, a PNG chart."""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import typing as t
from importlib import metadata
from pathlib import Path

from .cases import METRICS
from .cases import PG_COMMIT_OFF


def machine() -> dict[str, t.Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    versions = {}
    for dist in (
        "flask-plainqueue",
        "Flask",
        "Flask-SQLAlchemy",
        "SQLAlchemy",
        "psycopg",
        "huey",
        "procrastinate",
        "pgqueuer",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    pg_version = "?"
    try:
        pg_version = (
            subprocess.run(
                [
                    "psql",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-Atc",
                    "show server_version",
                ],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            or "not reachable"
        )
    except (OSError, subprocess.SubprocessError):
        pg_version = "psql not available"
    fs = "?"
    try:
        fs = (
            subprocess.run(
                ["df", "-T", "/tmp"], capture_output=True, text=True, timeout=5
            )
            .stdout.splitlines()[1]
            .split()[1]
        )
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg_version,
        "tmp_filesystem": fs,
        "load_average_at_start": os.getloadavg(),
        "versions": versions,
    }


@dataclasses.dataclass
class Row:
    scenario: dict[str, t.Any]
    label: str
    kind: str
    metric: str
    values: list[float]
    ratios: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")


def rows(data: dict[str, t.Any]) -> list[Row]:
    out = []
    for s in data["scenarios"]:
        primary = s["primary"]
        for c in s["contenders"]:
            label = c["label"]
            runs = [r for r in s["runs"].get(label, []) if "error" not in r]
            prim = {
                r["round"]: r for r in s["runs"].get(primary, []) if "error" not in r
            }
            for metric in s["metrics"]:
                values = [r[metric] for r in runs if metric in r]
                ratios = []
                if primary and label != primary:
                    for r in runs:
                        p = prim.get(r["round"])
                        if p is not None and r.get(metric) and metric in p:
                            ratios.append(p[metric] / r[metric])
                out.append(Row(s, label, c["kind"], metric, values, ratios))
    return out


#: Rounds disagree when a contender's highest round of the scenario's first
#: metric is more than this much above its lowest (issue 12: rerun such a case).
DISAGREE = 0.2


def disagreement(
    runs: t.Mapping[str, t.Sequence[t.Mapping[str, t.Any]]], metric: str
) -> float | None:
    """How far apart the rounds of the most scattered contender lie: its
    ``max / min - 1`` of ``metric`` over the rounds that measured it (0.0 with
    fewer than two such rounds; ``None``, unbounded, when a round measured 0 and
    another did not)."""
    worst = 0.0
    for results in runs.values():
        values = [r[metric] for r in results if "error" not in r and metric in r]
        if len(values) < 2 or max(values) <= 0:
            continue
        if min(values) <= 0:
            return None
        worst = max(worst, max(values) / min(values) - 1)
    return worst


def rounds_disagree(
    runs: t.Mapping[str, t.Sequence[t.Mapping[str, t.Any]]], metric: str
) -> bool:
    """Whether a scenario's rounds should be run again (see :data:`DISAGREE`)."""
    spread = disagreement(runs, metric)
    return spread is None or spread > DISAGREE


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def spread(values: list[float]) -> str:
    return f"{fmt(min(values))}–{fmt(max(values))}" if values else "–"


def ratio_cell(row: Row) -> str:
    if not row.ratios:
        return ""
    return f"{statistics.median(row.ratios):.2f}× ({min(row.ratios):.2f}–{max(row.ratios):.2f})"


# -- targets ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    what: str
    goal: str
    check: t.Callable[[dict[tuple[str, str, str], Row]], tuple[str, bool | None]]


OURS = "flask-plainqueue"


def _value(
    rows_by: dict[tuple[str, str, str], Row], key: str, label: str, metric: str
) -> float | None:
    row = rows_by.get((key, label, metric))
    return row.median if row and row.values else None


def _at_least(
    key: str, label: str, metric: str, bound: float, unit: str
) -> t.Callable[..., tuple[str, bool | None]]:
    def check(by: dict[tuple[str, str, str], Row]) -> tuple[str, bool | None]:
        v = _value(by, key, label, metric)
        return ("not measured", None) if v is None else (f"{fmt(v)} {unit}", v >= bound)

    return check


def _at_most(
    key: str, label: str, metric: str, bound: float, unit: str
) -> t.Callable[..., tuple[str, bool | None]]:
    def check(by: dict[tuple[str, str, str], Row]) -> tuple[str, bool | None]:
        v = _value(by, key, label, metric)
        return ("not measured", None) if v is None else (f"{fmt(v)} {unit}", v <= bound)

    return check


def _ratio(
    key: str, label: str, metric: str, bound: float, what: str
) -> t.Callable[..., tuple[str, bool | None]]:
    def check(by: dict[tuple[str, str, str], Row]) -> tuple[str, bool | None]:
        row = by.get((key, label, metric))
        if row is None or not row.ratios:
            return "not measured", None
        r = statistics.median(row.ratios)
        return f"{r:.2f}× {what}", r >= bound

    return check


def _both(
    *checks: t.Callable[..., tuple[str, bool | None]],
) -> t.Callable[..., tuple[str, bool | None]]:
    def check(by: dict[tuple[str, str, str], Row]) -> tuple[str, bool | None]:
        parts = [c(by) for c in checks]
        oks = [ok for _, ok in parts]
        ok = None if any(o is None for o in oks) else all(oks)
        return "; ".join(text for text, _ in parts), ok

    return check


def _shown(
    key: str, label: str, metric: str, unit: str
) -> t.Callable[..., tuple[str, bool | None]]:
    """A figure shown beside a goal, for information: it is never unmet."""

    def check(by: dict[tuple[str, str, str], Row]) -> tuple[str, bool | None]:
        v = _value(by, key, label, metric)
        return ("not measured", None) if v is None else (f"{fmt(v)} {unit}", True)

    return check


HUEY_NORMAL = "Huey SqliteStorage, synchronous=NORMAL"
HUEY_WORKER = f"{HUEY_NORMAL}, 1 thread worker"
SQLITE_PROCESS = f"{OURS}, `flask queue work` in another process"
WORK = f"{OURS}, `flask queue work`"
MEMORY = f"{OURS}, batch_size=100"


def _names_target(key: str, db: str, how: str) -> Target:
    return Target(
        f"1. {db}: 25 names, backlog {how} vs 1 name, 1,000 due",
        "≥ 0.9×",
        lambda by: _names_check(by, key, how),
    )


#: The targets of issue 12. Each ratio is ours / the peer's, taken per round:
#: ``Row.ratios`` are first contender / this one, and the first is ours.
TARGETS = (
    *(
        _names_target(key, db, how)
        for key, db in (("names-sqlite", "SQLite"), ("names-postgresql", "PostgreSQL"))
        for how in ("all of one name", "spread unevenly")
    ),
    Target(
        "2. worker, batch_size=1 (SQLite)",
        "≥ 1.0× Huey (NORMAL, 1 thread worker) in the same run",
        _ratio("process-b1", HUEY_WORKER, "rate", 1.0, "Huey (NORMAL)"),
    ),
    Target(
        "3. worker, batch_size=100 (SQLite)",
        "≥ 0.25× raw sqlite3 and ≥ 3× Huey (NORMAL, no batches)",
        _both(
            _ratio(
                "process-b100", "raw sqlite3 claim/delete loop", "rate", 0.25, "raw"
            ),
            _ratio(
                "process-b100",
                f"{HUEY_WORKER} (no batches)",
                "rate",
                3.0,
                "Huey (NORMAL)",
            ),
        ),
    ),
    Target(
        "4. `perform` one by one (SQLite)",
        "≥ 1.0× Huey (NORMAL)",
        _ratio("enqueue-one", HUEY_NORMAL, "rate", 1.0, "Huey (NORMAL)"),
    ),
    Target(
        "4. `perform_many` (SQLite)",
        "≥ 0.5× raw sqlite3 `executemany`",
        _ratio("enqueue-many", "raw sqlite3 executemany", "rate", 0.5, "raw"),
    ),
    Target(
        "5. cross-process pickup p50 (SQLite)",
        "≤ 2 ms at ≤ 0.5 % idle CPU",
        _both(
            _at_most("latency-sqlite", SQLITE_PROCESS, "p50_ms", 2, "ms"),
            _at_most("idle-sqlite", WORK, "cpu_pct", 0.5, "% idle CPU"),
        ),
    ),
    Target(
        "5. pickup p50 (PostgreSQL)",
        "≤ 3 ms",
        _at_most("latency-pg", WORK, "p50_ms", 3, "ms"),
    ),
    Target(
        f"5. pickup p50 (PostgreSQL), opt-in {PG_COMMIT_OFF}",
        "≤ 3 ms",
        _at_most("latency-pg", f"{WORK}, {PG_COMMIT_OFF}", "p50_ms", 3, "ms"),
    ),
    Target(
        "6. worker, batch_size=100 (PostgreSQL)",
        "≥ 1.5× pgqueuer",
        _ratio("process-pg-b100", "pgqueuer, batch_size=100", "rate", 1.5, "pgqueuer"),
    ),
    Target(
        "7. worker RSS",
        "flat: ≤ 5 MiB growth",
        _both(
            _at_most("memory", MEMORY, "rss_growth_mib", 5, "MiB growth"),
            _shown("memory", MEMORY, "rss_end_mib", "MiB at end"),
        ),
    ),
    Target(
        "7. 1M waiting vs 1k waiting (batch_size=100)",
        "≥ 0.9×",
        lambda by: _scale_check(by, "scale-b100"),
    ),
    Target(
        "7. 1M waiting vs 1k waiting (batch_size=1)",
        "≥ 0.9×",
        lambda by: _scale_check(by, "scale-b1"),
    ),
)


def _names_check(
    by: dict[tuple[str, str, str], Row], key: str, how: str
) -> tuple[str, bool | None]:
    for (k, label, metric), row in by.items():
        if k == key and metric == "rate" and label.endswith(how) and row.ratios:
            # The ratios are first / this; the target is this / first.
            r = 1 / statistics.median(row.ratios)
            return f"{r:.2f}× (25 names / 1 name)", r >= 0.9
    return "not measured", None


def _scale_check(
    by: dict[tuple[str, str, str], Row], key: str
) -> tuple[str, bool | None]:
    for (k, _label, metric), row in by.items():
        if k == key and metric == "rate" and row.ratios:
            r = statistics.median(row.ratios)
            return f"{r:.2f}× (big table / small table)", r >= 0.9
    return "not measured", None


# -- output -----------------------------------------------------------------------------


@dataclasses.dataclass
class Tables:
    markdown: str
    rst: str


def _header(data: dict[str, t.Any]) -> list[tuple[str, str]]:
    m = data["machine"]
    v = m["versions"]
    s = data["settings"]
    return [
        ("Run", f"{data['started']} UTC, {data['duration_s'] / 60:.1f} min"),
        ("Command", f"``{data['command']}``"),
        (
            "Settings",
            f"N={s['n']:,}, {s['rounds']} rounds, memory N={s['mem_n']:,},"
            f" scale {s['scale_waiting']:,} waiting, latency samples={s['samples']},"
            f" idle {s['idle_seconds']:g} s",
        ),
        (
            "Machine",
            f"{m['cpu']}, {m['cores']} cores, {m['memory']} RAM, {m['os']},"
            f" /tmp on {m['tmp_filesystem']}; load average at start "
            + ", ".join(f"{x:.2f}" for x in m["load_average_at_start"]),
        ),
        (
            "Software",
            f"Python {m['python']}, SQLite {m['sqlite']}, PostgreSQL {m['postgresql']}; "
            + ", ".join(f"{k} {val}" for k, val in v.items()),
        ),
        *([("Note", data["note"])] if data.get("note") else []),
    ]


def build(data: dict[str, t.Any]) -> Tables:
    all_rows = rows(data)
    by = {(r.scenario["key"], r.label, r.metric): r for r in all_rows}
    md: list[str] = ["# flask-plainqueue benchmarks", ""]
    for k, v in _header(data):
        md.append(f"- **{k}**: {v.replace('``', '`')}")
    md += [
        "",
        "Median of the rounds, min–max in brackets; the ratio is taken per round"
        " (first contender of the scenario / this one, so > 1 means the first is"
        " faster for tasks/s and slower for ms, % and MiB) and summarised the same way.",
        "",
    ]
    rst: list[str] = [".. list-table:: Run", "   :widths: 15 85", ""]
    for k, v in _header(data):
        rst += [f"   * - {k}", f"     - {v}"]
    rst.append("")

    # Only the targets this run measured (``--cases`` may have left some out).
    checked = [(target, *target.check(by)) for target in TARGETS]
    checked = [(target, text, ok) for target, text, ok in checked if ok is not None]
    if checked:
        md += [
            "## Targets (issue 12)",
            "",
            "| target | goal | measured | met |",
            "|---|---|---|---|",
        ]
        rst += [
            ".. list-table:: Targets (issue 12)",
            "   :header-rows: 1",
            "",
            "   * - target",
            "     - goal",
            "     - measured",
            "     - met",
        ]
    for target, text, ok in checked:
        mark = "yes" if ok else "**no**"
        md.append(f"| {target.what} | {target.goal} | {text} | {mark} |")
        rst += [
            f"   * - {_rst(target.what)}",
            f"     - {target.goal}",
            f"     - {_rst(text)}",
            f"     - {'–' if ok is None else ('yes' if ok else '**no**')}",
        ]
    md.append("")
    rst.append("")

    for s in data["scenarios"]:
        md += [f"## {s['title']}", ""]
        rst += [
            f".. list-table:: {_rst(s['title'])}",
            "   :header-rows: 1",
            "   :widths: 40 15 20 25",
            "",
            "   * - contender",
            "     - median",
            "     - min–max",
            "     - ratio (first / this)",
        ]
        md += [
            "| contender | metric | median | min–max | ratio first/this | rounds |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for c in s["contenders"]:
            for metric in s["metrics"]:
                row = by[(s["key"], c["label"], metric)]
                unit = METRICS[metric][0]
                label = c["label"] + (
                    " *(reference)*" if c["kind"] == "reference" else ""
                )
                if c["label"] in s["skipped"]:
                    md.append(
                        f"| {label} | {unit} | skipped: {s['skipped'][c['label']]} | | | 0 |"
                    )
                    rst += [
                        f"   * - {_rst(label)} ({unit})",
                        f"     - skipped: {_rst(s['skipped'][c['label']])}",
                        "     -",
                        "     -",
                    ]
                    continue
                errors = [
                    r["error"] for r in s["runs"].get(c["label"], []) if "error" in r
                ]
                md.append(
                    f"| {label} | {unit} | {fmt(row.median)} | {spread(row.values)} |"
                    f" {ratio_cell(row)} | {len(row.values)}"
                    + (f" ({len(errors)} failed)" if errors else "")
                    + " |"
                )
                rst += [
                    f"   * - {_rst(label)} ({unit})",
                    f"     - {fmt(row.median)}",
                    f"     - {spread(row.values)}",
                    f"     - {ratio_cell(row) or '–'}",
                ]
        extras = _extras(s)
        if s.get("note") or extras:
            md += ["", " ".join(filter(None, [s.get("note", ""), extras]))]
            rst += ["", " ".join(filter(None, [_rst(s.get("note", "")), _rst(extras)]))]
        rounds = _rounds(s)
        if rounds:
            md += ["", rounds]
            rst += ["", _rst(rounds)]
        md.append("")
        rst.append("")
    return Tables("\n".join(md) + "\n", "\n".join(rst) + "\n")


def _extras(s: dict[str, t.Any]) -> str:
    """Side facts a measurement reported (failed attempts of the realistic task)."""
    parts = []
    for label, runs in s["runs"].items():
        failed = [r["failed_rows"] for r in runs if r.get("failed_rows")]
        if failed:
            parts.append(f"{label}: tasks with a failed attempt per round: {failed}.")
    return " ".join(parts)


def _rounds(s: dict[str, t.Any]) -> str:
    """The load average when the scenario started, and whether its rounds were
    run again because they disagreed (results.json files from before either was
    recorded have neither)."""
    parts = []
    if s.get("load_average"):
        parts.append(f"Load average at the start: {_load(s['load_average'])}.")
    seen = s.get("disagreement", [])
    if len(seen) > 1:
        parts.append(
            f"Rounds disagreed by {percent(seen[0])} (> {DISAGREE * 100:.0f} %); rerun"
            + (
                f" (load average then: {_load(s['rerun_load_average'])})"
                if s.get("rerun_load_average")
                else ""
            )
            + "; the table shows the rerun's rounds."
        )
        if seen[1] is None or seen[1] > DISAGREE:
            parts.append(f"They still disagree after a rerun ({percent(seen[1])}).")
    return " ".join(parts)


def _load(values: t.Sequence[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in values)


def percent(spread: float | None) -> str:
    if spread is None:
        return "an unbounded amount (a round measured 0)"
    return f"{spread * 100:.0f} %"


def _rst(text: str) -> str:
    return re.sub(
        r"^(\d+)\. ",  # "2. worker": text, not an enumerated list
        r"\1\\. ",
        text.replace("`", "``")
        .replace("````", "``")
        .replace("*", "\\*")
        .replace("|", "\\|"),
    )


def chart(data: dict[str, t.Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (s, metric)
        for s in data["scenarios"]
        for metric in s["metrics"]
        if metric != "rss_growth_mib"
        and any(s["runs"].get(c["label"]) for c in s["contenders"])
    ]
    if not panels:
        return
    all_rows = {(r.scenario["key"], r.label, r.metric): r for r in rows(data)}
    cols = 2
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(
        nrows, cols, figsize=(15, 2.3 * nrows + 0.8), squeeze=False
    )
    colors = {"ours": "#2563eb", "peer": "#f59e0b", "reference": "#9ca3af"}
    for ax, (s, metric) in zip(axes.flat, panels, strict=False):
        labels, medians, lo, hi, cols_ = [], [], [], [], []
        for c in s["contenders"]:
            row = all_rows[(s["key"], c["label"], metric)]
            if not row.values:
                continue
            labels.append(_wrap(c["label"]))
            medians.append(row.median)
            lo.append(row.median - min(row.values))
            hi.append(max(row.values) - row.median)
            cols_.append(colors.get(c["kind"], "#6b7280"))
        y = list(range(len(labels)))[::-1]
        ax.barh(y, medians, xerr=[lo, hi], color=cols_, capsize=3)
        ax.set_yticks(y, labels, fontsize=7)
        unit, higher = METRICS[metric]
        ax.set_title(
            f"{_wrap(s['title'], 80)}\n{unit} ({'higher' if higher else 'lower'} is better)",
            fontsize=8,
        )
        ax.tick_params(axis="x", labelsize=7)
        for yi, m, h in zip(y, medians, hi, strict=False):
            ax.text(m + h, yi, f" {fmt(m)}", va="center", fontsize=7)
        ax.set_xlim(
            0,
            max(m + h for m, h in zip(medians, hi, strict=False)) * 1.25
            if medians
            else 1,
        )
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    stamp = datetime.datetime.fromisoformat(data["started"]).strftime(
        "%Y-%m-%d %H:%M UTC"
    )
    fig.suptitle(
        f"flask-plainqueue benchmarks, {stamp}: median and min–max of"
        f" {data['settings']['rounds']} rounds (blue: ours, orange: peers, grey: raw"
        " reference)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.99))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _wrap(text: str, width: int = 42) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text.replace("`", ""), width))
