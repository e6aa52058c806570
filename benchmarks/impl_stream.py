"""The stream case: how long a progress value takes from
``current_task.report_progress`` to a client of ``queue.stream`` reading the
event over HTTP.

The server is Werkzeug's (threads) in the measuring process; the task runs in
an embedded worker thread of the same process, but the stream learns of each
write only as it would from another process: through the backend's change
detection (SQLite's change probe, PostgreSQL's NOTIFY).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import typing as t
from pathlib import Path

from .common import percentile
from .impl_ours import _app
from .impl_ours import _database


def stream_latency(
    *,
    workdir: Path,
    samples: int,
    engine: str = "sqlite",
    pg_url: str | None = None,
) -> dict[str, t.Any]:
    """p50/p95 from ``report_progress`` to the SSE client, over ``samples``
    reports spaced just beyond the progress interval (so each is written at
    once, not held)."""
    from werkzeug.serving import make_server

    from flask_plainqueue import current_task
    from flask_plainqueue import progress

    from . import ourapp

    gap = progress.PROGRESS_INTERVAL + 0.05
    warm = 2
    with _database(workdir, engine, pg_url) as uri:
        app = _app(uri, BENCH_TASK="noop")

        # Kept, and lingering after its last report: a task whose row is
        # deleted at once can end before a loaded machine's stream reads its
        # last progress, and the stream then sees only that it is gone.
        @ourapp.queue.task(name="bench_stream", keep_succeeded=60)
        def bench_stream(data: t.Any) -> None:
            for i in range(samples + warm):
                time.sleep(gap)
                current_task.report_progress({"i": i, "t": time.monotonic()})
            time.sleep(2 * gap)

        app.add_url_rule(
            "/events/<int:task_id>",
            "events",
            lambda task_id: ourapp.queue.stream(task_id),
        )
        server = make_server("127.0.0.1", 0, app, threaded=True)
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        try:
            with app.app_context():
                task_id = ourapp.queue.perform(bench_stream)
            conn = http.client.HTTPConnection("127.0.0.1", server.server_port)
            conn.request("GET", f"/events/{task_id}")
            response = conn.getresponse()
            ourapp.queue.start_worker(app)
            latencies = []
            event = ""
            try:
                while True:
                    line = response.fp.readline().decode()
                    if not line:
                        break
                    if line.startswith("event: "):
                        event = line[7:].strip()
                    elif line.startswith("data: ") and event == "progress":
                        value = json.loads(line[6:])
                        if value["i"] >= warm:
                            latencies.append((time.monotonic() - value["t"]) * 1000)
                    elif line.startswith("data: ") and event == "done":
                        break
            finally:
                conn.close()
                ourapp.queue.stop_worker(app, timeout=10)
        finally:
            server.shutdown()
            server.server_close()
            with app.app_context():
                ourapp.db.engine.dispose()
    if len(latencies) < samples:
        raise RuntimeError(f"received {len(latencies)} of {samples} progress events")
    return {"p50_ms": percentile(latencies, 0.5), "p95_ms": percentile(latencies, 0.95)}
