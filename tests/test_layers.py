"""The layering of the package, checked from the import graph: a module imports only from layers below its
own, and no two sibling modules import each other. The contracts are the ones `lint-imports` runs in the
test command (pyproject.toml); here they are also shown to catch an upward import."""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp
import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _layers() -> list[set[str]]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    out = []
    for layer in contract["layers"]:
        names = {n.strip().strip("()") for n in layer.split("|")}
        out.append(names)
    return out


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("spotgym")


def _present(graph, layers):
    modules = graph.modules
    return [grimp.Layer(*sorted(n for n in names if n in modules)) for names in layers
            if any(n in modules for n in names)]


def test_no_upward_import(graph):
    illegal = graph.find_illegal_dependencies_for_layers(layers=_present(graph, _layers()))
    assert not illegal, [(d.importer, d.imported, [c for r in d.routes for c in r.chains]) for d in illegal]


def test_a_deliberate_upward_import_is_caught(graph):
    """The env importing a workflow (a library package reaching up) breaks the contract."""
    layers = _present(graph, _layers())
    graph.add_import(importer="spotgym.envs.core", imported="spotgym.workflows.train")
    try:
        illegal = graph.find_illegal_dependencies_for_layers(layers=layers)
    finally:
        graph.remove_import(importer="spotgym.envs.core", imported="spotgym.workflows.train")
    assert {(d.importer, d.imported) for d in illegal} == {("spotgym.envs", "spotgym.workflows")}


def test_nothing_imports_the_cli(graph):
    assert graph.find_modules_that_directly_import("spotgym.cli") == set()


def test_no_cycle_between_siblings(graph):
    for package in sorted(m for m in graph.modules if graph.find_children(m)):
        children = graph.find_children(package)
        if len(children) > 1:
            assert not graph.nominate_cycle_breakers(package), package
