"""The package's shape: layers point down only, and no import cycle beyond the known lazy ones."""

from __future__ import annotations

import sys

import grimp

# Import cycles that exist only through function-level imports of torch code (ops build their torch
# module lazily so that `import latbench` does not import torch) and the strategy registry package.
ALLOWED_CYCLES = {
    frozenset({"latbench.ops", "latbench.torch_ops"}),
    frozenset({"latbench.spaces.darts", "latbench.torch_spaces"}),
}
REGISTRY_PACKAGES = ("latbench.search.mnas.strategies",)


def _cycles(graph: grimp.ImportGraph) -> list[frozenset[str]]:
    adj = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(frozenset(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(adj):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_no_import_cycles_beyond_the_known_lazy_ones() -> None:
    graph = grimp.build_graph("latbench", exclude_type_checking_imports=True)
    cycles = _cycles(graph)
    unexpected = [
        sorted(c) for c in cycles if c not in ALLOWED_CYCLES and not all(m.startswith(REGISTRY_PACKAGES) for m in c)
    ]
    assert unexpected == []
    # the two cycles the layering broke stay broken
    for a, b in (("latbench.device", "latbench.backends.base"), ("latbench.predict.glue", "latbench.predict.evaluate")):
        assert not (graph.direct_import_exists(importer=a, imported=b) and graph.chain_exists(importer=b, imported=a))


def test_no_library_module_imports_the_cli() -> None:
    graph = grimp.build_graph("latbench", exclude_type_checking_imports=True)
    for module in graph.modules:
        if module.startswith("latbench.cli") or module == "latbench.__main__":
            continue
        imported = graph.find_modules_directly_imported_by(module)
        assert not any(m.startswith("latbench.cli") for m in imported), module
