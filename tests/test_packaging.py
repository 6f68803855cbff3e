"""The distribution's shape: what the wheel holds and what each import root may import."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"kit": "lugha", "cli": "lugha.cli", "data": "lugha.data", "training": "lugha.training",
         "export": "lugha.export", "runtimes": "lugha.runtimes"}


def _modules_on_disk() -> set[str]:
    """Every module file under the import roots, as the dotted name it must have in the wheel."""
    names = set()
    for folder, pkg in ROOTS.items():
        for py in (REPO / folder).rglob("*.py"):
            rel = py.relative_to(REPO / folder).with_suffix("")
            if "__pycache__" in rel.parts:
                continue
            names.add(".".join([pkg, *rel.parts]))
    return names


@pytest.mark.slow
def test_wheel_contains_every_module_and_data_file(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("lugha-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    in_wheel = {n[:-3].replace("/", ".") for n in names if n.endswith(".py")}
    missing = sorted(_modules_on_disk() - in_wheel)
    assert not missing, f"package folders/modules not in the wheel (list them in pyproject): {missing}"
    for lic in (REPO / "data" / "LICENSES").glob("*.txt"):
        assert f"lugha/data/LICENSES/{lic.name}" in names
    assert any(n.endswith("entry_points.txt") for n in names)


# The floors (README "Layout"): each import root may import only the floors listed for it. Third-party
# rules ride along: the contract, the data tooling and the runtimes never import torch.
FLOORS = {
    "kit": {"kit"},
    "data": {"kit", "data"},
    "runtimes": {"kit", "runtimes"},
    "training": {"kit", "training"},
    "export": {"kit", "data", "runtimes", "training", "export"},
    "cli": {"kit", "data", "runtimes", "training", "export", "cli"},
}
TORCH_FREE = {"kit", "data", "runtimes"}
KIT_THIRD_PARTY = {"numpy", "PIL", "tokenizers"}  # + the standard library and lugha's own contract
STDLIB = set(sys.stdlib_module_names)


def floor_of(module: str) -> str | None:
    """``lugha.export.pipeline`` -> ``export``; ``lugha.manifest`` -> ``kit``; not lugha -> None."""
    parts = module.split(".")
    if parts[0] != "lugha":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in FLOORS and parts[1] != "kit" else "kit"


def imports_of(path: Path, module: str) -> list[tuple[int, str, bool]]:
    """Every import in a file (module level, lazy, under TYPE_CHECKING alike) as (line, full module name,
    was_relative). Relative imports are resolved against the module's package the way Python does."""
    is_package = path.name == "__init__.py"
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, False) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module, False))
            else:
                base = package[: len(package) - node.level + 1]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else [])), True))
    return found


def import_violations(repo: Path) -> list[str]:
    """Each import that breaks the floor table, a torch rule, the kit's third-party rule or the absolute-
    import rule, named ``file:line: what``."""
    bad = []
    for folder, package in ROOTS.items():
        for py in sorted((repo / folder).rglob("*.py")):
            rel = py.relative_to(repo / folder).with_suffix("")
            module = ".".join([package, *(p for p in rel.parts if p != "__init__")])
            where = f"{py.relative_to(repo)}"
            for line, name, relative in imports_of(py, module):
                if relative:
                    bad.append(f"{where}:{line}: relative import of {name} (write `lugha.` imports)")
                target = floor_of(name)
                if target is not None and target not in FLOORS[folder]:
                    bad.append(f"{where}:{line}: {folder} imports {name} (floor {target})")
                top = name.split(".")[0]
                if folder in TORCH_FREE and top == "torch":
                    bad.append(f"{where}:{line}: {folder} imports torch")
                if folder == "kit" and target is None and top not in STDLIB and top not in KIT_THIRD_PARTY:
                    bad.append(f"{where}:{line}: the contract imports {top} (stdlib, numpy, Pillow, tokenizers only)")
    return bad


def test_every_import_points_down_the_floors():
    bad = import_violations(REPO)
    assert not bad, "\n".join(bad)


PLANTED = {
    "relative": ("runtimes/_planted.py", "from ..errors import BundleError\n"),
    "runtimes -> training": ("runtimes/_planted.py", "def f():\n    from lugha.training import model\n"),
    "runtimes -> torch": ("runtimes/_planted.py", "def f():\n    import torch.nn\n"),
    "kit -> cli": ("kit/_planted.py", "import lugha.cli._common\n"),
    "kit -> third party": ("kit/_planted.py", "import yaml\n"),
    "library -> cli": ("export/_planted.py", "from lugha.cli._common import user_path\n"),
    "training -> export": ("training/_planted.py", "from lugha.export import specs\n"),
    "data -> runtimes": ("data/_planted.py", "import lugha.runtimes.bundle as b\n"),
    "relative up to a sibling": ("training/_planted.py", "from ..runtimes import bundle\n"),
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_a_planted_wrong_way_import_is_caught(tmp_path, kind):
    """The checker on a copy of the package folders with one wrong-way import planted."""
    for folder in ROOTS:
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "static"))
    assert import_violations(tmp_path) == []
    file, code = PLANTED[kind]
    (tmp_path / file).write_text(code, encoding="utf-8")
    assert [v for v in import_violations(tmp_path) if v.startswith(file)], kind


def test_no_import_cycles():
    """Imports between lugha modules (lazy ones included: a lazy import hides a circle, it does not
    remove it) form no cycle."""
    graph = {}
    for folder, package in ROOTS.items():
        for py in (REPO / folder).rglob("*.py"):
            rel = py.relative_to(REPO / folder).with_suffix("")
            module = ".".join([package, *(p for p in rel.parts if p != "__init__")])
            tree = ast.parse(py.read_text(encoding="utf-8"))
            deps = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.startswith("lugha"):
                    deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
                elif isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names if a.name.startswith("lugha")}
            graph[module] = deps
    deps = {m: {d for d in ds if d in graph and d != m} for m, ds in graph.items()}
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(deps[m]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(deps):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


BLOCKED_IMPORT = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import lugha, lugha.runtimes, lugha.data, lugha.config, lugha.preprocess
from lugha.cli import build_parser
build_parser()  # every subcommand module must import without torch
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None and m == "torch"]
print("ok")
"""


def test_lugha_and_runtimes_import_with_torch_blocked():
    out = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_cli_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "lugha.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    from lugha.cli import COMMANDS

    for name in COMMANDS:
        assert name in out.stdout
        sub = subprocess.run([sys.executable, "-m", "lugha.cli", name, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and "usage: lugha" in sub.stdout, (name, sub.stderr)
