"""The typing test can fail: mypy passes tests/typecheck/check_perform.py as it
is, and reports each of its expected errors, with the marked code, once the
``# type: ignore[...]`` markers are removed.

mypy runs in a subprocess with the project's configuration (setup.cfg) and a
cache under a temporary directory: about 10 s cold, a second or two warm.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "tests" / "typecheck" / "check_perform.py"
MARKER = re.compile(r"\s+# type: ignore\[([a-z, -]+)\]$")
ERROR = re.compile(r"check_perform\.py:(\d+): error: .*\[([a-z-]+)\]$")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def mypy(path: Path, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    # From the checkout, so `import flask_plainqueue` is this tree's package.
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "setup.cfg"),
            "--cache-dir",
            str(cache_dir),
            "--show-error-codes",
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )


def markers(lines: list[str]) -> dict[int, set[str]]:
    """The codes marked on each line (1-based), from the file's text."""
    found: dict[int, set[str]] = {}
    for number, line in enumerate(lines, start=1):
        match = MARKER.search(line)
        if match:
            found[number] = {code.strip() for code in match.group(1).split(",")}
    return found


def errors(output: str) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for line in output.splitlines():
        match = ERROR.search(line)
        if match:
            found.setdefault(int(match.group(1)), set()).add(match.group(2))
    return found


def test_check_file_passes(cache_dir: Path) -> None:
    proc = mypy(CHECK, cache_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found in 1 source file" in proc.stdout


def test_every_marked_line_is_an_error_without_its_marker(
    cache_dir: Path, tmp_path: Path
) -> None:
    lines = CHECK.read_text().splitlines()
    expected = markers(lines)
    # The cases are among them.
    assert len(expected) >= 10
    bare = tmp_path / "check_perform.py"
    bare.write_text("\n".join(MARKER.sub("", line) for line in lines) + "\n")

    proc = mypy(bare, cache_dir)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    # Each marked line fails with exactly the marked codes, and no other line.
    assert errors(proc.stdout) == expected, proc.stdout


def test_removing_one_marker_fails(cache_dir: Path, tmp_path: Path) -> None:
    lines = CHECK.read_text().splitlines()
    (number,) = [
        n
        for n, line in enumerate(lines, start=1)
        if 'queue.perform(welcome, {"emial": 3})' in line
    ]
    lines[number - 1] = MARKER.sub("", lines[number - 1])
    copy = tmp_path / "check_perform.py"
    copy.write_text("\n".join(lines) + "\n")

    proc = mypy(copy, cache_dir)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert errors(proc.stdout) == {number: {"arg-type"}}, proc.stdout
    assert 'Argument 2 to "perform"' in proc.stdout
    assert 'incompatible type "dict[str, int]"; expected "Welcome' in proc.stdout
