"""The import graph keeps the architecture the README's layout describes.

Read from the source (every `import`, at module level, inside functions and under
`TYPE_CHECKING` alike: a lazy import is still an arrow), so a new module that reaches the wrong
way fails here, not in review.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "daemon" / "backup_sidecar"
ROOT = "backup_sidecar"

#: Each top-level part of the package, lowest first. An import may point at its own part or a
#: lower one, never up. Parts on one rank may not import each other.
RANKS: dict[str, int] = {
    "errors": 0,
    "_version": 0,
    "archiver": 1,
    "offsite": 1,
    "cron": 1,
    "cpus": 1,
    "logconfig": 1,
    "pagestore": 2,
    "progress": 2,
    "settings": 2,
    "appdata": 3,
    "control": 4,
    "jobs": 5,
    "service": 6,
    "cli": 7,
    "__main__": 8,
}

#: Modules allowed past MAX_LINES: pure declaration lists, no logic.
DECLARATION_LISTS = {"backup_sidecar.errors"}
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(path: Path, name: str, known: dict[str, Path]) -> Iterator[str]:
    """The modules `path` imports: `from pkg import mod` is pkg.mod when that is a module,
    `from mod import name` is mod."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                yield full if full in known else source


@cache
def graph() -> dict[str, frozenset[str]]:
    """Each project module -> the project modules it imports."""
    known = modules()
    return {
        name: frozenset(t for t in _imported(path, name, known) if t in known and t != name)
        for name, path in known.items()
    }


def part(module: str) -> str:
    """The top-level part a module belongs to: `backup_sidecar.service.core` -> `service`."""
    return module.split(".")[1] if module != ROOT else ROOT


def test_every_part_has_a_rank() -> None:
    """A new top-level module or package must be placed in the layering on purpose."""
    unranked = sorted({part(m) for m in modules()} - set(RANKS) - {ROOT})
    assert unranked == [], f"add these to RANKS in tests/test_layers.py: {unranked}"


def test_no_import_points_upward() -> None:
    """Lower layers never import higher ones (the archiver never sees the daemon, the control
    socket never sees the jobs, nothing but the CLI starts the service)."""
    upward = [
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if part(source) != part(target)
        and ROOT not in (source, target)
        and RANKS[part(target)] >= RANKS[part(source)]
    ]
    assert upward == []


#: The libraries: each may import only these parts of the project (not even the package root),
#: so it stays usable, and testable, without the daemon around it.
LIBRARIES: dict[str, set[str]] = {
    "archiver": {"archiver", "errors"},
    "offsite": {"offsite", "errors"},
    "pagestore": {"pagestore", "errors", "archiver", "offsite"},
}


def test_libraries_import_only_what_they_are_allowed() -> None:
    """The archiver (the core), offsite storage and the page store import nothing of the daemon:
    no settings, logging setup, metrics, scheduler, jobs or control socket."""
    outside = [
        f"{source} -> {target}"
        for source, targets in graph().items()
        if part(source) in LIBRARIES
        for target in targets
        if part(target) not in LIBRARIES[part(source)]
    ]
    assert outside == []


def test_only_the_cli_imports_the_service_and_nothing_imports_the_cli() -> None:
    """The long-running part is started by the CLI's `run` alone; the CLI is the top."""
    wrong = [
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if (part(target) == "service" and part(source) not in {"service", "cli"})
        or (part(target) == "cli" and part(source) not in {"cli", "__main__"})
    ]
    assert wrong == []


def find_circle(edges: dict[str, frozenset[str]]) -> list[str] | None:
    """One circle in `edges` as the path around it, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle() -> None:
    """No module reaches itself through its imports (lazy and TYPE_CHECKING imports count)."""
    circle = find_circle(graph())
    assert circle is None, " -> ".join(circle or [])


def test_the_circle_finder_finds_a_planted_circle() -> None:
    """The circle check is not vacuous: the real graph plus one arrow back is reported."""
    planted = {**graph(), "backup_sidecar.errors": frozenset({"backup_sidecar.cli"})}
    circle = find_circle(planted)
    assert circle is not None and circle[0] == circle[-1], circle


def test_no_module_is_over_the_line_limit() -> None:
    """Each module does one job; only a pure declaration list may run longer."""
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES and name not in DECLARATION_LISTS
    }
    assert long == {}


def test_every_public_exception_lives_in_errors() -> None:
    """An exception a caller may catch is declared in errors.py (one place to read what can go
    wrong); a module keeps only private control-flow exceptions (`_Name`) it raises and catches
    itself."""
    outside = [
        f"{name}.{node.name}"
        for name, path in modules().items()
        if name != "backup_sidecar.errors"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.ClassDef)
        and not node.name.startswith("_")
        and node.name.endswith(("Error", "Exception"))
    ]
    assert outside == []
