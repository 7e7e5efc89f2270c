"""The benchmarks measure the gateway from outside, over HTTP: none of them imports it
(docs/architecture.md, "Who imports whom": nothing imports the gateway)."""

from __future__ import annotations

import ast
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def imported_modules(source: Path) -> set[str]:
    tree = ast.parse(source.read_text(), filename=str(source))
    names = set()
    for node in ast.walk(tree):  # function-level imports too
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_benchmark_imports_the_gateway() -> None:
    sources = sorted(BENCHMARKS.rglob("*.py"))
    assert BENCHMARKS / "load" / "client.py" in sources
    offenders = {
        str(path.relative_to(BENCHMARKS)): sorted(
            name for name in imported_modules(path) if name.split(".")[0] == "server"
        )
        for path in sources
    }
    assert {path: names for path, names in offenders.items() if names} == {}
