"""LISTEN/NOTIFY under gevent's monkey-patching, in a subprocess
(``tests/apps/pggevent.py``). The in-process LISTEN/NOTIFY tests are in
``tests/integration/test_notify.py``."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import APPS
from helpers import child_env
from helpers import TIMEOUT

pytestmark = pytest.mark.postgresql


def test_listener_under_gevent(postgresql_uri: str) -> None:
    """Under gevent's monkey-patching (gunicorn's gevent workers) the listener is
    a greenlet: it wakes the worker and stops cleanly."""
    pytest.importorskip("gevent")
    result = subprocess.run(
        [sys.executable, str(APPS / "pggevent.py")],
        env=child_env(PGAPP_DATABASE_URI=postgresql_uri),
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "picked up 2" in result.stdout, output
    assert "stopped" in result.stdout, output
    assert "Traceback" not in output, output
