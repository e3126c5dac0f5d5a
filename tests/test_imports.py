"""The package's import structure: no cycles, no use of another module's private names, and
imports that go one way (utilities < data < model < training < experiments < commands)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "recbole_srgnn"
UTILITIES = {"errors", "files", "yaml_files", "json_safe", "threads", "run_identity", "provenance",
             "safe_pickle"}
COMMANDS = {"cli", "train_cli", "compare", "fusion", "data.cli", "data.__main__", "tune.cli",
            "tune.__main__", "experiments.compare_cli", "experiments.fusion_cli", "export_cli",
            "recommend_cli", "serve_cli"}
# the package's lazy re-exports (``from recbole_srgnn import Recommender``, imported on first use)
LAZY_EXPORTS = {("", "recommend")}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _layer(name: str) -> int:
    if name in COMMANDS:
        return 5
    if name in UTILITIES or name == "":
        return 0
    top = name.split(".")[0]
    if top == "data":
        return 1
    if top in ("model", "graph", "layers", "nn", "nn_recbole", "nn_scorers", "nn_knn", "knn_index",
               "networks", "bundle",
               "recommend", "micro_batch", "session_input"):
        return 2
    if top in ("training", "trainer", "training_state", "prepared_data"):
        return 3
    if top in ("experiments", "tune", "service"):
        return 4
    raise AssertionError(f"module {name} has no layer: add it to tests/test_imports.py")


def _imports(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted if dotted in modules else None

    edges: dict[str, set[str]] = {}
    private: list[str] = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    base = base[:len(base) - node.level + 1]
                    module = ".".join([*base, node.module] if node.module else base)
                    prefix = "recbole_srgnn." + module if module else "recbole_srgnn"
                else:
                    prefix = node.module or ""
                targets = [(f"{prefix}.{a.name}", a.name) for a in node.names]
                targets.append((prefix, None))
            else:
                continue
            for dotted, imported in targets:
                if not dotted.startswith("recbole_srgnn"):
                    continue
                target = known(dotted[len("recbole_srgnn"):].lstrip("."))
                if target is None or target == name:
                    continue
                deps.add(target)
                if imported and imported.startswith("_") and not imported.startswith("__"):
                    private.append(f"{name} imports {target}.{imported}")
        edges[name] = deps
    return edges, private


def test_no_cycles_and_no_private_names():
    modules = _modules()
    edges, private = _imports(modules)
    assert private == []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, dep]))
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [])


def test_imports_go_one_way():
    edges, _ = _imports(_modules())
    # the parser sees absolute, relative and lazy (in-function) imports
    assert {"trainer", "training.config"} <= edges["training.runs"]
    assert "nn" in edges["model.srgnn"]  # from ..nn import ...
    assert "graph" in edges["nn"]  # from .graph import ...
    assert "training.runs" in edges["train_cli"]  # imported inside main()
    upward = [f"{name} ({_layer(name)}) imports {dep} ({_layer(dep)})"
              for name, deps in sorted(edges.items()) for dep in sorted(deps)
              if _layer(dep) > _layer(name) and dep != "" and (name, dep) not in LAZY_EXPORTS]
    assert upward == []
