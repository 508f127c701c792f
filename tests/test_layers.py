"""Imports run one way through the layers of the package (docs/ARCHITECTURE.md):

    errors -> io, attributes, version -> backbones, heads, search, outputs -> data -> faces, evaluation
        -> model -> training -> applications -> experiments -> cli -> mtfap (the package's doors)

A part may import only parts of a lower layer (or itself); the test reads every import
statement of src/mtfap, function-level ones included, and fails on a back edge or a part that
is in no layer.
"""

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "mtfap"

LAYERS = [
    {"errors"},
    {"io", "attributes", "version", "resources"},
    {"backbones", "heads", "search", "outputs"},
    {"data"},
    {"faces", "evaluation"},
    {"model"},
    {"training"},
    {"applications"},
    {"experiments"},
    {"cli"},
    {"(root)", "__main__"},
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else "(root)"


def imports():
    """(importing part, imported part, where) for every mtfap import in the package."""
    for path in sorted(SOURCE.rglob("*.py")):
        module = ".".join(path.relative_to(SOURCE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        here = part_of(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name == "mtfap" or name.startswith("mtfap."):
                    yield here, part_of(name), f"{path.relative_to(SOURCE)}:{node.lineno}"


def test_every_part_of_the_package_is_in_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in SOURCE.iterdir()
             if (p.is_dir() and (p / "__init__.py").is_file()) or p.suffix == ".py"}
    parts = {"(root)" if p == "__init__" else p for p in parts}
    assert parts - set(RANK) == set(), "add the new part to LAYERS (and docs/ARCHITECTURE.md)"


def test_imports_run_one_way_through_the_layers():
    back_edges = [f"{where}: {here} imports {there}" for here, there, where in imports()
                  if here != there and RANK[there] >= RANK[here]]
    assert back_edges == []


@pytest.mark.parametrize("here, there, allowed", [("model", "training", False),
                                                  ("training", "model", True),
                                                  ("data", "cli", False)])
def test_the_rule_itself_tells_back_edges_from_forward_ones(here, there, allowed):
    assert (RANK[there] < RANK[here]) is allowed
