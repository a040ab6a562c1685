"""What a Space needs of the package: the import graph read from source, and the files of its closure.

Every ``import`` and ``from … import`` counts, also inside functions, so a lazily imported module is vendored too.
``lorallama sync`` vendors ``space_package_files`` (the modules the Space's ``app.py`` reaches, their packages'
data folders such as ``serving/static``) instead of the whole package; tests/test_architecture.py uses ``graph``
and ``cycles`` to keep the layers pointing down.

    python -m lorallama.publishing.vendoring src/lorallama      # modules, edges, cycles
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(package_dir: Path, file: Path) -> str:
    rel = file.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def graph(package_dir: Path) -> dict[str, set[str]]:
    """module → the package modules it imports (resolved to the module files that exist)."""
    package_dir = Path(package_dir)
    files = {module_name(package_dir, f): f for f in package_dir.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for name, file in files.items():
        is_pkg = file.name == "__init__.py"
        here = name if is_pkg else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # ``from pkg import mod`` imports the submodule; ``from mod import name`` the module itself
                targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in files else prefix for a in node.names]
            for t in targets:
                # the longest existing module that the name means (a submodule, else its package)
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    edges.add(t)
        out[name] = edges
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def imports_of(source: str) -> set[str]:
    """Absolute module names a script (a Space's app.py) imports."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def closure(g: dict[str, set[str]], roots: set[str]) -> set[str]:
    """Every module ``roots`` reach, the roots and their parent packages included."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m in seen or m not in g:
            continue
        seen.add(m)
        todo += g[m]
        parent = m.rpartition(".")[0]
        if parent:
            todo.append(parent)
    return seen


def space_package_files(package_dir: Path, app_sources: list[str]) -> dict[str, Path]:
    """``lorallama/<path>`` → file for everything the apps reach: modules, and the data folders (``static/``,
    ``templates/``) of the packages they are in."""
    package_dir = Path(package_dir)
    g = graph(package_dir)
    roots = {m for src in app_sources for m in imports_of(src) if m in g}
    needed = closure(g, roots)
    files: dict[str, Path] = {}
    for name in sorted(needed):
        rel = Path(*name.split(".")[1:])
        file = package_dir / rel / "__init__.py" if (package_dir / rel / "__init__.py").is_file() else None
        file = file or package_dir / rel.with_suffix(".py")
        files[f"{package_dir.name}/{file.relative_to(package_dir).as_posix()}"] = file
        if file.name == "__init__.py" and name != package_dir.name:  # a subpackage: its data folders ride along
            for data in sorted(p for p in file.parent.iterdir() if p.is_dir() and not (p / "__init__.py").exists()):
                for f in sorted(data.rglob("*")):
                    if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo"):
                        files[f"{package_dir.name}/{f.relative_to(package_dir).as_posix()}"] = f
    return files


if __name__ == "__main__":
    g = graph(Path(sys.argv[1] if len(sys.argv) > 1 else "src/lorallama"))
    found = cycles(g)
    print(f"modules {len(g)}, edges {sum(len(v) for v in g.values())}, cycles {len(found)}")
    for c in found:
        print("  cycle:", " ⇄ ".join(c))
