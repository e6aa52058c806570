"""``flask queue work --metrics-port``: a worker process serves its own
Prometheus metrics (the counters of the attempts it ran), scraped over HTTP
and parsed with ``prometheus_client``'s own parser."""

from __future__ import annotations

import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import flask_args
from helpers import free_port
from helpers import proc_app_fixture
from helpers import ProcApp
from helpers import Procs
from helpers import procs_fixture
from helpers import wait_for

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    yield from procs_fixture(tmp_path)


@pytest.fixture
def proc_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcApp]:
    yield from proc_app_fixture(tmp_path, monkeypatch)


def scrape(url: str) -> Samples | None:
    """Every sample at ``url``, or ``None`` while nothing answers there."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_worker_serves_its_counters(proc_app: ProcApp, procs: Procs) -> None:
    port = free_port()
    worker = procs.start(
        flask_args("procapp", "queue", "work", "--metrics-port", str(port)),
        env=proc_app.env(),
    )
    url = f"http://127.0.0.1:{port}/metrics"
    for n in range(3):
        proc_app.perform("record", {"key": f"k{n}"})
    succeeded = (
        "plainqueue_tasks_succeeded_total",
        (("queue", "default"), ("task", "record")),
    )

    def ran_all() -> Samples | None:
        if worker.returncode is not None:
            pytest.fail(
                f"the worker exited with {worker.returncode}:\n{worker.output()}"
            )
        samples = scrape(url)
        # The counter moves when an attempt ends; its row goes with the next
        # claim's transaction, a moment later: wait for both.
        settled = samples is not None and all(
            value == 0
            for (name, _), value in samples.items()
            if name == "plainqueue_tasks"
        )
        return samples if samples and samples[succeeded] == 3 and settled else None

    samples = wait_for(ran_all, message=lambda: f"3 successes:\n{worker.output()}")
    assert sorted(key for key, _ in proc_app.runs()) == ["k0", "k1", "k2"]
    defined = sorted((d.options.queue, d.name) for d in proc_app.module.queue.registry)
    for outcome in ("succeeded", "failed", "dead"):
        counters = {
            labels: value
            for (name, labels), value in samples.items()
            if name == f"plainqueue_tasks_{outcome}_total"
        }
        expected = {
            (("queue", queue), ("task", task)): 3.0
            if (outcome, task) == ("succeeded", "record")
            else 0.0
            for queue, task in defined
        }
        assert counters == expected
    # The gauges are read from the database: this worker is registered and
    # running, and every task ran.
    assert samples[("plainqueue_workers", (("state", "running"),))] == 1
    assert samples[("plainqueue_oldest_due_age_seconds", (("queue", "default"),))] == 0
    tasks = {k: v for k, v in samples.items() if k[0] == "plainqueue_tasks"}
    assert tasks and set(tasks.values()) == {0.0}

    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()


def test_port_in_use_is_one_error_line(proc_app: ProcApp, procs: Procs) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = procs.start(
            flask_args("procapp", "queue", "work", "--metrics-port", str(port)),
            env=proc_app.env(),
        )
        assert worker.wait() == 1
    assert f"Error: --metrics-port: cannot listen on 127.0.0.1:{port}" in (
        worker.stderr()
    )
    assert "Traceback" not in worker.stderr()
