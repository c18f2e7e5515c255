"""Sessions CI runs, identically on a laptop: `nox -s lint typecheck tests`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

SOURCES = ["taskflow", "tests", "examples", "benchmarks", "noxfile.py"]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the import layers (import-linter)."""
    session.install("ruff==0.17.6", "import-linter==2.17")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)
    # the layer contract in pyproject.toml; import-linter imports the package to find it
    session.install("-e", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the examples (files and settings in
    pyproject.toml's [tool.mypy]); the tests' dependencies are installed so their imports
    are checked too."""
    session.install("-e", ".[dev,fastapi]", "mypy==2.4.1")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite against a real Redis (TASKFLOW_TEST_REDIS_URL, default localhost)."""
    session.install("-e", ".[dev,fastapi,embedded]")
    session.run("pytest", *session.posargs)
