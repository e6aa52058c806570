"""Starting, waiting for and ending the worker processes of one measurement."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import typing as t
from pathlib import Path

#: The repository root, so ``benchmarks`` and ``flask_plainqueue`` import in children.
ROOT = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


def start(
    args: t.Sequence[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """Start ``python args...`` with output going to ``log``."""
    out = open(log, "ab")
    try:
        return subprocess.Popen(
            [sys.executable, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        out.close()


def wait_all(
    procs: t.Sequence[subprocess.Popen[bytes]], timeout: float, log: Path
) -> None:
    """Wait for every process to exit 0; kill them all and raise on timeout or error."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            remaining = max(deadline - time.monotonic(), 0.1)
            rc = proc.wait(remaining)
            if rc != 0:
                raise RuntimeError(f"worker exited with {rc}; log:\n{tail(log)}")
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"worker did not finish in {timeout:.0f}s; log:\n{tail(log)}"
        ) from None
    finally:
        stop(procs)


def stop(procs: t.Sequence[subprocess.Popen[bytes]], sig: int = signal.SIGKILL) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
