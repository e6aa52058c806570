"""nox sessions for flask-plainqueue; ``nox -l`` lists them, ``nox`` runs the
default ones."""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.needs_version = ">=2024.3.2"
nox.options.reuse_existing_virtualenvs = True

#: Supported Pythons, oldest first (setup.cfg's python_requires and classifiers).
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _runs(version: str) -> bool:
    # A pyenv shim exists for every installed version but fails unless that
    # version is selected, so finding the name is not enough.
    path = shutil.which(f"python{version}")
    if path is None:
        return False
    return subprocess.run([path, "-c", ""], capture_output=True).returncode == 0


def _installed(versions: list[str]) -> list[str]:
    """The versions that run on this machine, so that a missing interpreter
    does not fail CI; the newest listed one if none does."""
    found = [v for v in versions if _runs(v)]
    return found or [versions[-1]]


@nox.session(python=_installed(PYTHONS))
def tests(session: nox.Session) -> None:
    """Run the tests against the installed package (PostgreSQL cases skip)."""
    # Non-editable, so a template or py.typed missing from the wheel fails here.
    session.install(".")
    session.install("-r", "requirements/tests.txt")
    session.run("pytest", *session.posargs)


@nox.session(default=False)
def tests_postgresql(session: nox.Session) -> None:
    """Run the PostgreSQL tests; needs TEST_POSTGRESQL_URL."""
    if not os.environ.get("TEST_POSTGRESQL_URL"):
        session.error(
            "Set TEST_POSTGRESQL_URL, e.g."
            " postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
    session.install(".[postgresql]")
    session.install("-r", "requirements/tests.txt")
    session.run("pytest", "-m", "postgresql", *session.posargs)


@nox.session(python=_installed(PYTHONS)[0], default=False)
def tests_min(session: nox.Session) -> None:
    """Run the tests with the oldest Flask, Flask-SQLAlchemy and SQLAlchemy."""
    session.install(".")
    session.install("-r", "requirements/tests.txt")
    session.install(
        "Flask==2.3.*",
        "Werkzeug==2.3.*",
        "Flask-SQLAlchemy==3.1.*",
        "SQLAlchemy==2.0.16",
    )
    session.run("pytest", *session.posargs)


@nox.session(default=False)
def browser(session: nox.Session) -> None:
    """Run the dashboard tests in headless Chromium (Debian's chromium package)."""
    session.install(".")
    session.install("-r", "requirements/tests.txt")
    session.run("pytest", "-m", "browser", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check lint and formatting with ruff, and the layers with import-linter."""
    session.install(".")
    session.install("-r", "requirements/lint.txt")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session(python=sorted({_installed(PYTHONS)[0], _installed(PYTHONS)[-1]}))
def typing(session: nox.Session) -> None:
    """Type-check flask_plainqueue and tests with mypy --strict (oldest, newest),
    including tests/typecheck/check_perform.py, whose expected errors prove
    that ``perform`` is checked against the task's data type."""
    session.install(".")
    session.install("-r", "requirements/typing.txt")
    session.run("mypy", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the HTML docs with warnings as errors."""
    session.install(".")
    session.install("-r", "requirements/docs.txt")
    session.run(
        "sphinx-build", "-W", "-b", "html", "docs", "docs/_build/html", *session.posargs
    )


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Run the benchmark suite against its peers (python -m benchmarks)."""
    session.install(".[postgresql]")
    session.install("-r", "requirements/bench.txt")
    session.run("python", "-m", "benchmarks", *session.posargs)
