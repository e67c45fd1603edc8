"""The command line's package imports one way: ``steptrace.cli`` registers the command
modules, they use the shared modules below them, and nothing imports back up (so
there is no cycle for a late import to hold together). Read from the source by grimp,
the graph builder import-linter uses; function-level imports count too."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import grimp
import pytest

COMMANDS = ("otel", "query", "run", "runs", "store", "ui")
"""One module per command group: none imports another."""
LAYERS = (COMMANDS, ("app", "names"), ("errors",), ("output",))
"""Highest first: a module may import only from the layers below its own."""


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("steptrace", cache_dir=None)


def cli_modules(graph: grimp.ImportGraph) -> set[str]:
    return {m for m in graph.modules if m == "steptrace.cli" or m.startswith("steptrace.cli.")}


def test_every_cli_module_has_its_layer(graph: grimp.ImportGraph) -> None:
    listed = {f"steptrace.cli.{name}" for layer in LAYERS for name in layer}
    assert cli_modules(graph) == {"steptrace.cli", *listed}


def test_cli_modules_import_only_downwards(graph: grimp.ImportGraph) -> None:
    layers = [grimp.Layer(*layer, independent=True) for layer in LAYERS]
    illegal = graph.find_illegal_dependencies_for_layers(layers, containers={"steptrace.cli"})
    assert not illegal, [
        " -> ".join((min(r.heads), *r.middle, min(r.tails))) for d in illegal for r in d.routes
    ]


def test_cli_import_graph_is_acyclic(graph: grimp.ImportGraph) -> None:
    modules = cli_modules(graph)
    edges = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join((*path, module))
        if module in done:
            return
        for imported in sorted(edges[module]):
            visit(imported, (*path, module))
        done.add(module)

    for module in sorted(modules):
        visit(module, ())


def test_nothing_outside_the_cli_imports_it(graph: grimp.ImportGraph) -> None:
    modules = cli_modules(graph)
    importers = {
        m for m in graph.modules - modules if graph.find_modules_directly_imported_by(m) & modules
    }
    assert importers == {"steptrace.__main__"}


def test_cli_imports_no_private_names() -> None:
    """What one module shares with another is a public name of its owner."""
    spec = importlib.util.find_spec("steptrace.cli")  # its source, not imported
    assert spec is not None and spec.origin is not None
    package = Path(spec.origin).parent
    found = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("steptrace"):
                found += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert found == []
