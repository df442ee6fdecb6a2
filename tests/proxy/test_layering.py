"""The proxy's modules import one way: down the layers proxy/__init__.py maps.

Read from the source (`ast`), `if TYPE_CHECKING:` blocks included: a type-only
import is still a dependency a reader has to hold in mind.
"""

from __future__ import annotations

import ast
from pathlib import Path

PROXY = Path(__file__).resolve().parents[2] / "proxy"

# Bottom first; a module may import only modules of lower layers.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "status_page", "metrics", "hop_by_hop", "answers"),
    ("values", "edge", "access_log"),
    ("settings", "stats", "wire"),
    ("health", "request_head", "response_head", "membership"),
    ("balancer", "checker", "cluster"),
    ("records",),
    ("upstream", "status", "tls", "discovered"),
    ("pool", "relay", "discovery", "tls_hello", "status_stream"),
    ("tls_listener",),
    ("response",),
    ("request",),
    ("client",),
    ("listeners",),
    ("server",),
    ("__main__", "__init__"),
)


def proxy_imports(path: Path) -> set[str]:
    """The modules of `path`'s package (named `proxy`) it imports, wherever the
    import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from .x import y
                base = node.module.split(".")[0] if node.module else None
                found.update([base] if base else [alias.name for alias in node.names])
            elif node.module == "proxy":
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("proxy."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("proxy."):
                    found.add(alias.name.split(".")[1])
    modules = {p.stem for p in path.parent.glob("*.py")}
    return found & modules - {path.stem}


def graph() -> dict[str, set[str]]:
    return {path.stem: proxy_imports(path) for path in sorted(PROXY.glob("*.py"))}


def cycle_in(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the path around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_a_type_checking_cycle(tmp_path: Path) -> None:
    # The detector itself, on a two-module circle hidden behind TYPE_CHECKING.
    (tmp_path / "a.py").write_text("from proxy.b import B\n")
    (tmp_path / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from proxy.a import A\n"
    )
    found = {path.stem: proxy_imports(path) for path in tmp_path.glob("*.py")}
    assert found == {"a": {"b"}, "b": {"a"}}
    assert cycle_in(found) == ["a", "b", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_proxy() -> None:
    assert cycle_in(graph()) is None


def test_every_import_points_down_the_layers() -> None:
    layer_of = {module: index for index, layer in enumerate(LAYERS) for module in layer}
    edges = graph()
    assert set(edges) == set(layer_of), "a module is missing from LAYERS (or LAYERS is stale)"
    upward = [
        f"{module} (layer {layer_of[module]}) imports {target} (layer {layer_of[target]})"
        for module, targets in edges.items()
        for target in targets
        if layer_of[target] >= layer_of[module]
    ]
    assert upward == []
