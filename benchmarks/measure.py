"""One measurement in a fresh process: ``python -m benchmarks.measure SPEC``.

``SPEC`` is JSON: ``{"func": "module:function", "params": {...}, "workdir": path}``.
The function sets up its fresh database in ``workdir`` (untimed), starts whatever
worker processes it needs, measures, and returns a dict of metrics, which is
printed as the last line (see :func:`benchmarks.common.emit`).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import typing as t
from pathlib import Path

from .common import emit
from .common import Skip


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    module_name, func_name = spec["func"].split(":")
    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        emit({"skip": f"cannot import {exc.name or module_name}: {exc}"})
        return 0
    func: t.Callable[..., dict[str, t.Any]] = getattr(module, func_name)
    try:
        result = func(workdir=workdir, **spec["params"])
    except Skip as exc:
        emit({"skip": str(exc)})
        return 0
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
