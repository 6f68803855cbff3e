"""The distribution's shape: what the wheel holds and what each import root may import."""
from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"kit": "lugha", "training": "lugha.training", "export": "lugha.export", "runtimes": "lugha.runtimes"}
KIT_ALLOWED = {"numpy", "PIL", "tokenizers", "lugha"}  # + the standard library
STDLIB = set(sys.stdlib_module_names)


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
    for lic in (REPO / "kit" / "data" / "LICENSES").glob("*.txt"):
        assert f"lugha/data/LICENSES/{lic.name}" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def _top_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_kit_imports_only_stdlib_numpy_pillow():
    bad = {}
    for py in (REPO / "kit").rglob("*.py"):
        extra = {m for m in _top_imports(py) if m not in STDLIB and m not in KIT_ALLOWED}
        if extra:
            bad[str(py.relative_to(REPO))] = sorted(extra)
    assert not bad, f"kit/ (import root lugha) may import only stdlib, numpy, Pillow, tokenizers: {bad}"


# The opt-in PyTorch reference backend of `lugha bench --reference RUN`: the one runtimes module that may
# import torch and lugha.training, and only inside functions (the torch-blocked import test proves it).
TORCH_REFERENCE = "runtimes/torch_backend.py"


def _module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_runtimes_never_import_torch():
    offenders = []
    for p in (REPO / "runtimes").rglob("*.py"):
        rel = str(p.relative_to(REPO))
        names = _module_level_imports(p) if rel == TORCH_REFERENCE else _top_imports(p)
        if any(n.split(".")[0] == "torch" or n.startswith("lugha.training") for n in names):
            offenders.append(rel)
    assert not offenders, f"lugha.runtimes must never import torch: {offenders}"


def test_arrows_point_one_way():
    """training -> kit, export -> training + kit, runtimes -> kit only; kit imports none of them."""
    forbidden = {
        "kit": ("lugha.training", "lugha.export", "lugha.runtimes"),
        "training": ("lugha.export", "lugha.runtimes"),
        "runtimes": ("lugha.training", "lugha.export"),
    }
    bad = []
    for folder, banned in forbidden.items():
        for py in (REPO / folder).rglob("*.py"):
            src = py.read_text(encoding="utf-8")
            bad += [f"{py.relative_to(REPO)} imports {b}" for b in banned if f"import {b}" in src or f"from {b}" in src]
    # kit's CLI is the one place allowed to reach into later stages, lazily inside run(); the torch
    # reference backend reaches lugha.training lazily, only when asked for.
    bad = [b for b in bad if not b.startswith("kit/cli/") and not b.startswith(TORCH_REFERENCE)]
    assert not bad, bad


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
