"""The page store is a core library: it imports only itself, the errors, the archiver's
no-follow file helpers, the stdlib and its two libraries, and its modules stay small."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from support.paths import ROOT

PACKAGE = ROOT / "daemon" / "backup_sidecar" / "pagestore"
ALLOWED = {
    "backup_sidecar.errors",
    "backup_sidecar.archiver.safefs",
    "backup_sidecar.archiver.sqlitefacts",
}
LIBRARIES = {"sqlean", "backports", "compression"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_pagestore_imports_only_its_layer() -> None:
    """No module of pagestore/ imports the daemon (settings, jobs, service, cli, metrics,
    logging) or any archiver module but safefs and sqlitefacts (the check in the backup's
    read transaction reads the same facts a full archive records)."""
    wrong: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            ok = (
                name in ALLOWED
                or name.startswith("backup_sidecar.pagestore")
                or top in LIBRARIES
                or (top in sys.stdlib_module_names and top != "backup_sidecar")
                or name == "__future__"
            )
            if not ok:
                wrong.setdefault(path.name, []).append(name)
    assert wrong == {}
    assert len(list(PACKAGE.glob("*.py"))) >= 8


def test_pagestore_modules_stay_small() -> None:
    """Every module is at most 300 lines (small modules, one responsibility each)."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert {n: s for n, s in sizes.items() if s > 300} == {}
