"""The package's layout holds: no import cycles, layers point down, serving never reaches training, one CLI; the
studio sits on top beside the CLI and only the studio Space's app imports it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from lorallama.publishing.vendoring import closure, cycles, graph, imports_of

PKG = Path(__file__).resolve().parents[1] / "src" / "lorallama"
REPO = PKG.parents[1]
LAYERS = {
    "lorallama.training": {"lorallama.training"},
    "lorallama.serving": {"lorallama.serving"},
    "lorallama.publishing": {"lorallama.publishing", "lorallama.training", "lorallama.serving"},
    "lorallama.cli": {"lorallama.cli", "lorallama.publishing", "lorallama.training", "lorallama.serving"},
    "lorallama.studio": {"lorallama.studio", "lorallama.publishing", "lorallama.training", "lorallama.serving"},
}
STUDIO_SPACE = "studio"  # the one Space whose app may reach the studio (and through it training and publishing)
SUBPACKAGES = tuple(LAYERS)


def layer(module: str) -> str:
    return next((p for p in SUBPACKAGES if module == p or module.startswith(p + ".")), "ground")


def test_the_graph_sees_lazy_imports_and_finds_a_cycle(tmp_path):
    """The checker itself: a cycle through a function-level import is found (today's checks are not vacuous)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n")
    assert cycles(graph(pkg)) == [["pkg.a", "pkg.b"]]


def test_no_import_cycle_inside_the_package():
    assert cycles(graph(PKG)) == []


def test_each_layer_imports_only_what_is_below_it():
    """Ground modules import ground modules only; training and serving import the ground and themselves;
    publishing may use both; the CLI and the studio sit on top, and neither imports the other (nothing imports
    them)."""
    wrong = []
    for module, targets in graph(PKG).items():
        mine = layer(module)
        allowed = {"ground"} | (LAYERS.get(mine, set()))
        for target in targets:
            if target == "lorallama" or layer(target) in allowed:
                continue
            wrong.append(f"{module} → {target}")
    assert wrong == []


def test_a_space_reaches_no_training_publishing_or_cli_code():
    """A chat Space vendors serving and the ground only; the studio Space reaches the studio (and so training and
    publishing), never the CLI."""
    g = graph(PKG)
    apps = sorted(REPO.glob("spaces/*/app.py"))
    assert STUDIO_SPACE in {a.parent.name for a in apps}
    for app in apps:
        reached = closure(g, {m for m in imports_of(app.read_text()) if m in g})
        assert reached, app
        layers = {layer(m) for m in reached}
        if app.parent.name == STUDIO_SPACE:
            assert "lorallama.studio" in layers and "lorallama.cli" not in layers, sorted(reached)
        else:
            assert layers <= {"ground", "lorallama.serving"}, (app, sorted(reached))


def test_only_the_studio_space_imports_the_studio():
    importers = [
        m
        for m, targets in graph(PKG).items()
        if layer(m) != "lorallama.studio" and any(layer(t) == "lorallama.studio" for t in targets)
    ]
    assert importers == []
    for app in sorted(REPO.glob("spaces/*/app.py")) + sorted(REPO.glob("train_jobs/*.py")):
        uses = any(m.startswith("lorallama.studio") for m in imports_of(app.read_text()))
        assert uses == (app.parent.name == STUDIO_SPACE and app.parts[-3] == "spaces"), app


def test_only_the_cli_parses_arguments_or_defines_main():
    offenders = []
    for file in PKG.rglob("*.py"):
        if "cli" in file.relative_to(PKG).parts:
            continue
        tree = ast.parse(file.read_text())
        if any(isinstance(n, ast.Import | ast.ImportFrom) and "argparse" in ast.dump(n) for n in ast.walk(tree)):
            offenders.append(f"{file.name} imports argparse")
        if any(isinstance(n, ast.FunctionDef) and n.name in ("main", "add_commands") for n in tree.body):
            offenders.append(f"{file.name} defines a command entry point")
    assert offenders == []


def test_no_module_finds_the_checkout_by_counting_parents_or_steers_another_by_environment():
    """Where things live is paths.py's business; no library code sets an environment variable for another."""
    for file in PKG.rglob("*.py"):
        text = file.read_text()
        if file.name != "paths.py":
            assert "parents[2]" not in text and "parents[1]" not in text, file
        assert not re.search(r"os\.environ\[[^\]]+\]\s*=|os\.environ\.(update|setdefault)\(", text), file


def test_one_definition_of_each_naming_helper():
    defs: dict[str, list[str]] = {}
    for file in PKG.rglob("*.py"):
        for node in ast.parse(file.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                defs.setdefault(node.name, []).append(str(file.relative_to(PKG)))
    for name in ("is_repo_id", "hub_url", "with_namespace", "namespace_override", "resolve_target", "plot_loss"):
        assert defs.get(name) is not None and len(defs[name]) == 1, (name, defs.get(name))
    assert "is_hub_id" not in defs and "_is_hub_id" not in defs
