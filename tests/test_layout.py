"""What one module shares with another is a public name of its owner: no module of
steptrace imports a private (``_``-prefixed) name from another, nor reads one through a
module it imported. (The layering itself is checked by import-linter's contracts in
``.importlinter``, run by the test command.)"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path


def _sources() -> list[Path]:
    spec = importlib.util.find_spec("steptrace")  # its source, not imported
    assert spec is not None and spec.origin is not None
    return sorted(Path(spec.origin).parent.rglob("*.py"))


def _private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: set[str] = set()  # names bound to steptrace modules in this file
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("steptrace"):
            for alias in node.names:
                if alias.name.startswith("_") and alias.name != "__version__":
                    found.append(
                        f"{path.name}:{node.lineno}: from {node.module} import {alias.name}"
                    )
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("steptrace"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    sources = _sources()
    assert len(sources) > 50
    found = [use for path in sources for use in _private_uses(path)]
    assert found == []


def test_the_check_finds_a_private_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from steptrace.runtime import _hidden\nfrom steptrace import record\nrecord._secret\n",
        encoding="utf-8",
    )
    assert _private_uses(sample) == [
        "sample.py:1: from steptrace.runtime import _hidden",
        "sample.py:3: record._secret",
    ]
