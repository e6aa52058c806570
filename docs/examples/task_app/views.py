from __future__ import annotations

from flask import Blueprint
from flask import request
from flask import Response

from . import queue
from . import tasks

bp = Blueprint("tasks", __name__, url_prefix="/tasks")


@bp.get("/<int:id>/events")
def events(id: int) -> Response:
    return queue.stream(id)


@bp.post("/add")
def add() -> dict[str, object]:
    a = request.form.get("a", 0, type=int)
    b = request.form.get("b", 0, type=int)
    return {"result_id": queue.perform(tasks.add, {"a": a, "b": b})}


@bp.post("/block")
def block() -> dict[str, object]:
    return {"result_id": queue.perform(tasks.block)}


@bp.post("/process")
def process() -> dict[str, object]:
    total = request.form.get("total", 0, type=int)
    return {"result_id": queue.perform(tasks.process, {"total": total})}
