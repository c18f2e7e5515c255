"""The README's two set-up commands exist, and CI runs exactly the test one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bash_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_ci_runs_the_readme_test_command() -> None:
    commands = [b for b in _bash_blocks() if "nox" in b and "\n" not in b]
    assert len(commands) == 1, commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[0] in ci


def test_readme_runs_the_examples() -> None:
    main = [b for b in _bash_blocks() if "examples/" in b and "\n" not in b]
    assert len(main) == 1, main
    assert "examples/quickstart.py" in main[0]
    assert "examples/nightly_report.py" in main[0]
