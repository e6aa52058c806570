from __future__ import annotations

import time

from flask_plainqueue import current_task

from . import queue


@queue.task(name="task_app.add", keep_succeeded=60)
def add(data: dict[str, int]) -> int:
    return data["a"] + data["b"]


@queue.task(name="task_app.block")
def block() -> None:
    time.sleep(5)


@queue.task(name="task_app.process", keep_succeeded=60)
def process(data: dict[str, int]) -> object:
    total = data["total"]
    for i in range(total):
        current_task.report_progress({"current": i + 1, "total": total})
        time.sleep(1)

    return {"current": total, "total": total}
