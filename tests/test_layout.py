"""The layout's rules (README, "Layout"), read from the imports of every module of the package: no import circles;
models import no data, trainers, tasks or metrics; trainers import no corpus module (they get a corpus object through
the task's setup) and no task; metrics import only the standard library, numpy and leaf modules; nothing at the
package root is one task's or one model's code. Function-level imports count as much as module-level ones."""

import ast
import os
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_vtrain"

# Modules that import nothing of the package: anything may use them.
LEAVES = {"hf_vtrain.exit_codes"}
# What the package root may hold: the entry points and the mechanisms every task shares.
ROOT_MODULES = {"__init__", "run", "parser", "phases", "exit_codes", "pretrained_sources", "predict",
                "model_folders", "feature_cache"}
CORPUS_MODULES = {"thumos14", "ucf_crime", "ntu60", "fred", "synthetic_thumos14", "synthetic_ucf_crime",
                  "synthetic_ntu60", "synthetic_fred"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def package_imports(source_root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the hf_vtrain modules it imports (a `from X import name` of a submodule counts as that submodule)."""
    modules = {}
    for path in sorted(source_root.rglob("*.py")):
        modules[_module_name(path)] = path
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path.name == "__init__.py", node)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("hf_vtrain"):
                    while target not in modules and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target != module:
                        found.add(target)
        graph[module] = found
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    cycle = find_cycle(graph)
    if cycle:
        out.append("import circle: " + " -> ".join(cycle))
    for module, targets in sorted(graph.items()):
        parts = module.split(".")
        for target in sorted(targets):
            t = target.split(".")
            if len(parts) > 1 and parts[1] == "models":
                if len(t) > 1 and t[1] in ("data", "trainers", "tasks", "metrics", "plotting"):
                    out.append(f"{module} imports {target}: models import no data, trainers, tasks or metrics")
                elif len(t) > 2 and t[1] == "models" and t[2] != parts[2] and (PACKAGE / "models" / t[2]).is_dir():
                    # a model package imports no other model package; modules beside them (models/<name>.py) are
                    # building blocks several models share (models/rgb_pose_recognition.py)
                    out.append(f"{module} imports {target}: a model imports no other model's code")
            if len(parts) > 1 and parts[1] == "trainers":
                if len(t) > 2 and t[1] == "data" and t[2] in CORPUS_MODULES:
                    out.append(f"{module} imports {target}: trainers never import a corpus module")
                if len(t) > 1 and t[1] == "tasks":
                    out.append(f"{module} imports {target}: trainers never import the tasks")
            if len(parts) > 1 and parts[1] == "metrics":
                if not (len(t) > 1 and t[1] == "metrics") and target not in LEAVES:
                    out.append(f"{module} imports {target}: metrics import only their own helpers and leaf modules")
            if module in LEAVES:
                out.append(f"{module} imports {target}: a leaf module imports nothing of the package")
    for path in PACKAGE.glob("*.py"):
        if path.stem not in ROOT_MODULES:
            out.append(f"hf_vtrain/{path.name}: not a root module (entry points and shared mechanisms only): put one "
                       f"task's or one model's code where its user lives")
    return out


def test_the_package_keeps_the_layout_rules():
    graph = package_imports()
    assert "hf_vtrain.trainers.base" in graph and "hf_vtrain.tasks.tad" in graph  # the walk found the package
    assert violations(graph) == []


@pytest.mark.parametrize("module, line, expected", [
    ("trainers/tad.py", "from ..data.thumos14 import collate_tad", "trainers never import a corpus module"),
    ("models/adatad/modeling_adatad.py", "from ...trainers.base import VTrainer", "models import no data"),
    ("metrics/tad.py", "from ..data.common import write_json_atomic", "metrics import only their own helpers"),
    ("data/common.py", "from ..tasks.tad import SPEC", "import circle"),
    ("trainers/base.py", "from ..tasks import get_task", "trainers never import the tasks"),
    ("models/epam/modeling_epam.py", "from ..rgbpose_conv3d import RGBPoseConv3DConfig",
     "a model imports no other model's code"),
])
def test_a_forbidden_import_is_caught(tmp_path, module, line, expected):
    """The check fails when a forbidden import is added (in a function, where it would not run at import)."""
    import shutil

    copy = tmp_path / "hf_vtrain"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n\ndef _added():\n    {line}\n")
    found = violations_of(copy)
    assert any(expected in v for v in found), found


def violations_of(root: Path) -> list[str]:
    global PACKAGE
    saved, PACKAGE = PACKAGE, root
    try:
        return violations(package_imports(root))
    finally:
        PACKAGE = saved


def test_a_root_module_under_a_generic_name_is_caught(tmp_path):
    import shutil

    copy = tmp_path / "hf_vtrain"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "losses.py").write_text('"""focal loss"""\n')
    assert any("hf_vtrain/losses.py: not a root module" in v for v in violations_of(copy))


def test_no_folder_shadows_a_library():
    """`accelerate launch hf_vtrain/run.py` puts hf_vtrain/ first on the import path."""
    shadowing = {"datasets", "evaluate", "transformers", "accelerate", "peft", "deepspeed", "types", "typing", "json"}
    names = {p.stem for p in PACKAGE.iterdir() if p.is_dir() or p.suffix == ".py"}
    assert not names & shadowing, names & shadowing
    assert os.path.isdir(PACKAGE / "data")
