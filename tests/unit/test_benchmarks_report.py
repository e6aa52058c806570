"""The benchmark report's arithmetic, on hand-made results (no database, no
subprocess; the suite itself runs in
``tests/processes/test_benchmarks_smoke.py``)."""

from __future__ import annotations

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
