"""The flask-plainqueue benchmark suite: ours side by side with Huey, procrastinate,
pgqueuer and raw-driver reference loops, each measurement in fresh processes on a
fresh database. Run it with ``python -m benchmarks --help``."""

from __future__ import annotations
