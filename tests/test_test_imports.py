"""The test harness stays one: helpers live in tests/support and are imported from there. A
test that imports a conftest or another test module (what made three daemon runners grow)
fails here, naming the file and the line."""

from __future__ import annotations

import ast
from pathlib import Path

from support.paths import ROOT

TESTS = ROOT / "tests"


def _forbidden(module: str) -> bool:
    """A conftest or a test module, however it is reached (`conftest`, `daemon.conftest`,
    `.test_x`, `tests.reliability.test_x`)."""
    last = module.rsplit(".", 1)[-1]
    return last == "conftest" or last.startswith("test_")


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names = [base] if base else [alias.name for alias in node.names]
        else:
            continue
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if _forbidden(n)]
    return found


def test_no_test_imports_a_conftest_or_another_test_module() -> None:
    """Every module under tests/ imports helpers from `support.*`, never from a conftest or a
    test module (pytest loads those itself; importing them runs a second copy)."""
    bad = [hit for path in sorted(TESTS.rglob("*.py")) for hit in _imports(path)]
    assert bad == [], "\n".join(bad)


def test_the_check_sees_each_way_of_importing_one() -> None:
    """The rule catches every spelling of the imports it forbids, and lets `support` pass."""
    assert all(map(_forbidden, ["conftest", "daemon.conftest", "test_x", "tests.r.test_y"]))
    assert not any(map(_forbidden, ["support.daemon", "support.archives", "backup_sidecar"]))
