"""Misbehaving tasks, callbacks and receivers for the fault tests, run under a
real ``flask queue work`` (``tests/processes/test_faults.py``).

``FAULTAPP_DATABASE_URI``
    the SQLAlchemy URI (a SQLite file under the test's ``tmp_path``, or a
    PostgreSQL schema of its own).
``FAULTAPP_DIR``
    a directory for marker files: ``ran-<name>`` is written by each ordinary
    task (a line per run by ``record``), ``exited-once`` by the task that ends
    its process on its first try; ``record`` waits for a file ``gate``.
``PLAINQUEUE_LEASE_SECONDS``, ``PLAINQUEUE_SHUTDOWN_GRACE``,
``PLAINQUEUE_HEARTBEAT``, ``PLAINQUEUE_WORKER_TIMEOUT``
    copied into ``app.config``.
"""

from __future__ import annotations

import os
import time
import typing as t
from pathlib import Path

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import current_task
from flask_plainqueue import PlainQueue
from flask_plainqueue import signals

db = SQLAlchemy()
queue = PlainQueue(db=db)
#: Retries far in the future: a test sees exactly one attempt of each.
RETRY_LATER = 3600.0


def _marker(name: str) -> Path:
    return Path(os.environ["FAULTAPP_DIR"]) / name


def _raise(kind: type[BaseException]) -> t.NoReturn:
    raise kind()


@queue.task(name="body_system_exit", max_retries=3, retry_interval=RETRY_LATER)
def body_system_exit() -> None:
    raise SystemExit(3)


@queue.task(name="body_keyboard_interrupt", max_retries=3, retry_interval=RETRY_LATER)
def body_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


@queue.task(name="body_generator_exit", max_retries=3, retry_interval=RETRY_LATER)
def body_generator_exit() -> None:
    raise GeneratorExit


@queue.task(
    name="success_system_exit",
    success=lambda data: _raise(SystemExit),
    max_retries=3,
    retry_interval=RETRY_LATER,
)
def success_system_exit() -> None:
    pass


@queue.task(
    name="failure_keyboard_interrupt",
    failure=lambda data, exc: _raise(KeyboardInterrupt),
    max_retries=3,
    retry_interval=RETRY_LATER,
)
def failure_keyboard_interrupt() -> None:
    raise ValueError("the body fails, then its callback interrupts")


@queue.task(name="receiver_system_exit", max_retries=3, retry_interval=RETRY_LATER)
def receiver_system_exit() -> None:
    pass


@queue.task(name="past_timeout", timeout=0.5, max_retries=3, retry_interval=RETRY_LATER)
def past_timeout() -> None:
    # Blocks past its timeout and past the shutdown grace period.
    time.sleep(8)


@queue.task(name="huge_error", max_retries=3, retry_interval=RETRY_LATER)
def huge_error() -> None:
    raise RuntimeError("x" * 1_000_000)


@queue.task(name="exit_process_once", max_retries=3, retry_interval=RETRY_LATER)
def exit_process_once() -> None:
    marker = _marker("exited-once")
    if not marker.exists():
        marker.write_text("1")
        os._exit(17)


@queue.task(name="slow_batch", batch_size=3)
def slow_batch() -> None:
    time.sleep(60)


@queue.task(name="held_then_lost")
def held_then_lost() -> None:
    # The first attempt blocks until its process is killed; the next one ends.
    marker = _marker("held")
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(600)
    _marker("ran-held_then_lost").write_text(str(os.getpid()))


@queue.task(name="ordinary")
def ordinary(data: str) -> None:
    _marker(f"ran-{data}").write_text("1")


@queue.task(name="record", batch_size=4)
def record(data: str) -> None:
    # A line per run, written first: a second run shows as a second line.
    with _marker(f"ran-{data}").open("a") as marks:
        marks.write(f"{os.getpid()} {current_task.attempt}\n")
    gate = _marker("gate")
    while not gate.exists():
        time.sleep(0.01)


def _receiver(sender: object, *, task: str, **kwargs: object) -> None:
    if task == "receiver_system_exit":
        raise SystemExit(4)


signals.task_started.connect(_receiver)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["FAULTAPP_DATABASE_URI"]
    for key in (
        "PLAINQUEUE_LEASE_SECONDS",
        "PLAINQUEUE_SHUTDOWN_GRACE",
        "PLAINQUEUE_HEARTBEAT",
        "PLAINQUEUE_WORKER_TIMEOUT",
    ):
        if key in os.environ:
            app.config[key] = float(os.environ[key])
    db.init_app(app)
    queue.init_app(app)
    with app.app_context():
        db.create_all()
    return app
