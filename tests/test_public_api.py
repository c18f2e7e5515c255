"""The package root exports exactly its declared names, and they are all documented."""

from __future__ import annotations
import __future__

import inspect
import types

import taskflow


def test_root_exports_match_all() -> None:
    public = {
        name
        for name, value in vars(taskflow).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType | __future__._Feature)
    }
    assert public == set(taskflow.__all__)


def test_every_export_has_a_docstring() -> None:
    missing = [
        name
        for name in taskflow.__all__
        if (inspect.isclass(obj := getattr(taskflow, name)) or inspect.isfunction(obj))
        and not inspect.getdoc(obj)
    ]
    assert missing == []


def test_all_is_a_sorted_tuple() -> None:
    assert isinstance(taskflow.__all__, tuple)
    assert list(taskflow.__all__) == sorted(taskflow.__all__)
