"""symsm's import graph: modules, imports, and the modules caught in import cycles (strongly connected
components of more than one module), with and without the lazy imports of the documented convenience methods.

    python -m benchmarks.import_graph            # the tree on sys.path (PYTHONPATH=DIR to measure another)

Every import that runs counts, module-level or inside a function (grimp sees both), so a lazy import that
closes a cycle is a cycle too; imports for type checkers only (`if TYPE_CHECKING:`) never run and are left
out. The second count leaves out the edges the layering contract allows: the lazy imports of the documented
convenience methods (`Model.derive`, `Model.compile`, `_repr_latex_`: model → derive, runtime, latex).
"""

from __future__ import annotations

import argparse
import sys

import grimp

# The documented convenience methods that may reach forward lazily (pyproject.toml's import-linter contract).
CONVENIENCE = {
    ("symsm.model.model", "symsm.derive.derivation"),
    ("symsm.model.model", "symsm.runtime.compiled"),
    ("symsm.model.model", "symsm.latex"),
    ("symsm.derive.derivation", "symsm.latex"),
    # the same methods before the stages became packages (to measure older trees)
    ("symsm.model", "symsm.derive"),
    ("symsm.model", "symsm.compiled"),
    ("symsm.model", "symsm.latex"),
    ("symsm.derive", "symsm.latex"),
}


def _allowed(importer: str, imported: str) -> bool:
    return any(importer == a and (imported == b or imported.startswith(b + ".")) for a, b in CONVENIENCE)


def strongly_connected(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of the directed graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    out.append(sorted(comp))
    return out


def measure(allow_convenience: bool) -> dict:
    graph = grimp.build_graph("symsm", include_external_packages=False, exclude_type_checking_imports=True)
    nodes = {m for m in graph.modules if m.startswith("symsm")}
    edges: dict[str, set[str]] = {}
    n_imports = 0
    for m in nodes:
        for imported in graph.find_modules_directly_imported_by(m):
            if imported not in nodes:
                continue
            if allow_convenience and _allowed(m, imported):
                continue
            edges.setdefault(m, set()).add(imported)
            n_imports += 1
    cycles = [c for c in strongly_connected(nodes, edges) if len(c) > 1]
    return {"modules": len(nodes), "imports": n_imports, "cycles": cycles}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    import symsm

    print(f"symsm at {symsm.__file__}")
    for allow in (False, True):
        r = measure(allow)
        in_cycles = sum(len(c) for c in r["cycles"])
        label = "without the convenience methods' lazy imports" if allow else "every import"
        print(
            f"{label}: {r['modules']} modules, {r['imports']} imports, {in_cycles} modules in {len(r['cycles'])} cycles"
        )
        for c in r["cycles"]:
            print("   ", " ↔ ".join(c))


if __name__ == "__main__":
    sys.exit(main())
