"""The code layout docs/architecture.md draws: each area of sagan_tf/ imports only the areas below it, and
the serving package, the CLIs and the library keep to their sides.

Imports are read from the source (every `import` and `from ... import`, inside functions too), so a lazy
import counts like a top-level one.
"""
import ast

import pytest

from tests.helpers import ROOT

#: What each area of sagan_tf/ may import (besides itself): the table in docs/architecture.md.
MAY_IMPORT = {
    "layers": set(),
    "losses.py": set(),
    "models": {"layers"},
    "run": {"models"},
    "runtime": {"run"},
    "data": {"run"},
    "config.py": {"layers", "losses.py", "models", "runtime"},
    "sampling": {"layers", "models", "run", "runtime"},
    "evaluation": {"data", "models", "run", "runtime", "sampling"},
    "summary.py": {"config.py", "models"},
    "training": {"config.py", "data", "evaluation", "layers", "losses.py", "models", "run", "runtime", "sampling"},
}
#: The top level of sagan_tf/ holds a handful of modules, the rest is in sub-packages.
TOP_LEVEL_MODULES = {"__init__.py", "config.py", "losses.py", "summary.py"}


def _area(module):
    parts = module.split(".")
    if len(parts) == 1:
        return None
    return parts[1] if (ROOT / "sagan_tf" / parts[1]).is_dir() else parts[1] + ".py"


def _imports(path):
    """The sagan_tf modules (dotted) that `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "sagan_tf":
                found.update(f"sagan_tf.{alias.name}" for alias in node.names)
            elif node.module.startswith("sagan_tf."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("sagan_tf."))
    return found


def _edges(folder):
    edges = set()
    for path in sorted((ROOT / folder).rglob("*.py")):
        relative = path.relative_to(ROOT)
        source = _area(".".join(relative.with_suffix("").parts)) if folder == "sagan_tf" else folder
        for module in _imports(path):
            target = _area(module)
            if target and target != source:
                edges.add((source, target, str(relative)))
    return edges


def test_every_area_of_the_library_imports_only_what_it_may():
    assert set(MAY_IMPORT) | {"__init__.py"} >= {_area(f"sagan_tf.{p.name.removesuffix('.py')}")
                                                   for p in (ROOT / "sagan_tf").iterdir()
                                                   if p.suffix == ".py" or (p / "__init__.py").exists()}
    wrong = sorted(edge for edge in _edges("sagan_tf") if edge[1] not in MAY_IMPORT[edge[0]])
    assert wrong == [], wrong


def test_the_allowed_imports_run_down_the_layers_without_a_cycle():
    order, remaining = [], {area: set(targets) for area, targets in MAY_IMPORT.items()}
    while remaining:
        ready = sorted(area for area, targets in remaining.items() if targets <= set(order))
        assert ready, f"a cycle among {sorted(remaining)}"
        order += ready
        for area in ready:
            del remaining[area]


@pytest.mark.parametrize("folder, never", [("sagan_tf", ("export", "trainers")),
                                           ("export", ("sagan_tf.training", "trainers"))])
def test_the_library_and_the_serving_package_keep_to_their_sides(folder, never):
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                       [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            for module in modules:
                assert not any(module == n or module.startswith(n + ".") for n in never), (str(path), module)


def test_the_top_level_keeps_a_handful_of_modules_and_the_clis_stay_thin():
    assert {p.name for p in (ROOT / "sagan_tf").glob("*.py")} == TOP_LEVEL_MODULES
    for path in sorted((ROOT / "trainers").glob("*.py")):
        assert len(path.read_text().splitlines()) <= 120, path.name
