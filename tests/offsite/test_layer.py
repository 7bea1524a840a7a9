"""The offsite library is a layer: it imports only itself, ``backup_sidecar.errors``, the
standard library, obstore and pyrage, and every module stays small."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import backup_sidecar.offsite

PACKAGE = Path(backup_sidecar.offsite.__file__).parent
ALLOWED_THIRD_PARTY = {"obstore", "pyrage"}
MAX_LINES = 300


def imported_modules(path: Path) -> set[str]:
    """Every absolute module an ``import`` or ``from ... import`` of ``path`` names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            assert node.module is not None
            names.add(node.module)
    return names


def test_offsite_imports_only_itself_errors_stdlib_obstore_pyrage() -> None:
    """No module of backup_sidecar.offsite imports the archiver, settings, jobs, cli or service
    (nor any third-party package but obstore and pyrage): the wiring maps values onto it."""
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) > 5
    wrong: list[str] = []
    for path in modules:
        for name in imported_modules(path):
            top = name.split(".")[0]
            if name == "backup_sidecar.errors" or name.startswith("backup_sidecar.offsite"):
                continue
            if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY or top == "__future__":
                continue
            wrong.append(f"{path.name} imports {name}")
    assert wrong == []


def test_offsite_modules_stay_small() -> None:
    """Every module of the offsite package is at most 300 lines (STYLE: small modules)."""
    long = {
        p.name: n
        for p in PACKAGE.glob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
