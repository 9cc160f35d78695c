"""The structure of s2s drawn from its own imports: modules -> the s2s modules they import
(read with `ast`, nothing is imported or run), grouped into rooms (each subpackage and each
top-level module of s2s is one room), and the circles among them.

    python tools/import_graph.py              # the rooms' arrows, then every circle
    python tools/import_graph.py --modules    # also the module-level circles
    python tools/import_graph.py --skip s2s.experiment.config:s2s.decode.beam_search

Every import counts, those inside functions too (a lazy import is still a dependency). A
circle among rooms is printed with the module imports that make each of its arrows. Exit
status 1 when there is a circle among rooms (after --skip), else 0. tests/test_layout.py runs
it on the rooms issue 34 reshaped.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path) -> str:
    """s2s/experiment/load.py -> s2s.experiment.load; s2s/experiment/__init__.py ->
    s2s.experiment."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_edges(root: Path) -> dict[str, set[str]]:
    """module -> the modules of the package at `root` it imports (`from a import b` counts as
    a.b when a/b is a module, else as a)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    top = root.name
    edges: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]  # fmt: skip
            else:
                continue
            for t in targets:
                while t and t not in files and "." in t:  # import a.b.c where c is a name
                    t = t.rpartition(".")[0]
                if (t == top or t.startswith(top + ".")) and t in files and t != mod:
                    edges[mod].add(t)
    return edges


def room(module: str) -> str:
    """s2s.experiment.load -> s2s.experiment; s2s.pack -> s2s.pack; s2s -> s2s."""
    return ".".join(module.split(".")[:2])


def room_edges(
    edges: dict[str, set[str]], skip: set[tuple[str, str]] = frozenset()
) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """room -> other room -> the module imports (a, b) that make that arrow."""
    out: dict[str, dict[str, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for a, targets in edges.items():
        out[room(a)]  # every room, arrows or not
        for b in sorted(targets):
            if room(a) != room(b) and (a, b) not in skip:
                out[room(a)][room(b)].append((a, b))
    return out


def circles(graph: dict[str, set[str]] | dict[str, dict]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                out.append(sorted(scc))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=REPO / "s2s", help="the package (default s2s)")
    p.add_argument("--modules", action="store_true", help="also print module-level circles")
    p.add_argument("--skip", nargs="*", default=[], help="a:b module imports left out")
    args = p.parse_args(argv)
    skip = {tuple(s.split(":", 1)) for s in args.skip}
    edges = module_edges(args.root)
    rooms = room_edges(edges, skip)
    n = sum(len(v) for v in rooms.values())
    print(f"{len(edges)} modules in {len(rooms)} rooms, {n} arrows between rooms")
    for a in sorted(rooms):
        print(f"  {a} -> {', '.join(sorted(rooms[a])) or '-'}")
    found = circles(rooms)
    for scc in found:
        print(f"circle among rooms: {' '.join(scc)}")
        for a in scc:
            for b in scc:
                for x, y in rooms[a].get(b, []):
                    print(f"  {x} -> {y}")
    if not found:
        print("no circle among rooms")
    if args.modules:
        for scc in circles(edges):
            print(f"circle among modules: {' '.join(scc)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
