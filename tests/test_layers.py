"""Imports point down the layers only, so each layer can be read (and tested) without the ones above it.

Layers, lowest first: io/errors/params (and the other small helpers) < data, models < training < methods,
metrics < harness, api < cli. A module may import its own layer or lower ones; a new top-level module
must be given a layer here, so nobody adds one without deciding where it sits.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import obliviate

PACKAGE = Path(obliviate.__file__).parent
LAYERS = {
    **dict.fromkeys(("errors", "io", "params", "env", "finite", "progress", "verdict"), 0),
    **dict.fromkeys(("data", "models"), 1),
    **dict.fromkeys(("training", "lineage"), 2),
    **dict.fromkeys(("methods", "metrics"), 3),
    **dict.fromkeys(("harness", "api", "certificate", "backdoor_runs"), 4),
    "cli": 5,
    "__init__": 6,  # the package's public face re-exports from every layer
    "__main__": 6,  # python -m obliviate: the CLI
}


def _top(parts: tuple[str, ...]) -> str:
    """The first component under ``obliviate`` (``obliviate/data/x.py`` -> ``data``)."""
    return parts[0].removesuffix(".py") if parts else "__init__"


def imported_tops(source: str, module: tuple[str, ...], is_package: bool) -> list[tuple[int, str]]:
    """(line, top-level component) of every ``obliviate`` import in ``source``, function-local ones too.

    ``module`` is the module's path under the package without ``.py`` (``("training", "trainer")``)."""
    here = module if is_package else module[:-1]  # the package a relative import starts from
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
            found += [(node.lineno, n[1]) for n in names if n[0] == "obliviate" and len(n) > 1]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                target = base + tuple((node.module or "").split(".")) if node.module else base
            elif node.module and node.module.split(".")[0] == "obliviate":
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            if target:
                found.append((node.lineno, target[0]))
            else:  # `from .. import api`: each name is a top-level module
                found += [(node.lineno, a.name) for a in node.names]
    return found


def violations(path: Path) -> list[str]:
    rel = path.relative_to(PACKAGE)
    module = rel.with_suffix("").parts
    is_package = path.name == "__init__.py"
    if is_package:
        module = module[:-1]
    me = _top(module) if module else "__init__"
    out = []
    for line, top in imported_tops(path.read_text(), module, is_package):
        if top not in LAYERS:
            out.append(f"{rel}:{line}: obliviate.{top} has no layer in tests/test_layers.py")
        elif LAYERS[top] > LAYERS[me]:
            out.append(f"{rel}:{line}: {me} (layer {LAYERS[me]}) imports {top} (layer {LAYERS[top]})")
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_top_level_module_has_a_layer():
    tops = {_top(p.relative_to(PACKAGE).parts) for p in MODULES}
    assert tops <= set(LAYERS), f"give these a layer: {sorted(tops - set(LAYERS))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    assert violations(path) == []


@pytest.mark.parametrize("source, module, is_package, expected", [
    ("from ..metrics.accuracy import accuracy", ("training", "trainer"), False, [(1, "metrics")]),
    ("def f():\n    from ..harness import bench", ("data", "x"), False, [(2, "harness")]),
    ("from .. import api", ("cli", "x"), False, [(1, "api")]),
    ("from . import load_all", ("methods", "base"), False, [(1, "methods")]),
    ("from .base import X", ("methods",), True, [(1, "methods")]),
    ("import obliviate.cli.main\nfrom obliviate.harness import bench", ("models", "zoo"), False,
     [(1, "cli"), (2, "harness")]),
    ("import numpy\nfrom typing import Any", ("data", "x"), False, []),
])
def test_the_checker_sees_each_import_form(source, module, is_package, expected):
    """The layer test must catch an upward import in every spelling, a function-local one included."""
    assert imported_tops(source, module, is_package) == expected


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "__init__.py"],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_its_own_package_init(path):
    """A submodule reading names from its package's ``__init__`` is a cycle in waiting (the ``__init__``
    imports the submodule first); ``from . import x`` is allowed only for a sibling module ``x``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
            for alias in node.names:
                sibling = path.parent / alias.name
                assert (sibling.with_suffix(".py")).exists() or (sibling / "__init__.py").exists(), \
                    f"{path.relative_to(PACKAGE)}:{node.lineno}: imports {alias.name!r} from its package __init__"
