"""Every module of the package sits in a layer of the import contract (pyproject.toml), so
a new module cannot escape the layer check that `lint-imports` runs in the lint session."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import taskflow

ROOT = Path(__file__).resolve().parent.parent


def _layered() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    [contract] = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    names: set[str] = set()
    for layer in contract["layers"]:
        names |= {part.strip() for part in layer.replace("|", ":").split(":")}
    return names


def test_every_top_level_module_is_in_a_layer() -> None:
    modules = {f"taskflow.{info.name}" for info in pkgutil.iter_modules(taskflow.__path__)}
    assert modules - _layered() == set()
    assert _layered() - modules == set(), "the contract names modules that do not exist"
