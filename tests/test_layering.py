"""Where code may import from: the package never needs the repo's tests, unit tests never the lab.

The installed package (``vhtrace``, ``mockbackend``) must work without ``tests/`` (it is
not installed); unit tests run without the real stack, so they do not import
``vhtrace.lab``, neither themselves nor through the ``tests`` helpers they import. Read
from the source (every ``import`` statement, lazy and type-only ones included).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
PACKAGES = ("vhtrace", "mockbackend")
LAB_FIXTURE = TESTS / "conftest.py"
"""Its ``lab`` fixture imports the lab, and refuses any test outside tests/system/."""


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a import b`` names ``a`` and ``a.b``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def module_of(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def repo_test_modules() -> dict[str, Path]:
    return {module_of(path): path for path in TESTS.rglob("*.py")}


def reaches(start: Path, target: str, modules: dict[str, Path]) -> list[str] | None:
    """The chain of ``tests`` modules by which ``start`` imports ``target``, or None."""
    first = module_of(start) if start.is_relative_to(REPO) else start.name
    todo: list[tuple[Path, list[str]]] = [(start, [first])]
    seen: set[Path] = set()
    while todo:
        path, chain = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in sorted(imported_modules(path)):
            if is_within(name, target):
                return [*chain, name]
            if name in modules:
                todo.append((modules[name], [*chain, name]))
    return None


def unit_test_files() -> list[Path]:
    """Every test module and conftest outside tests/system/ (the lab fixture's aside)."""
    system = TESTS / "system"
    return sorted(
        path
        for path in TESTS.rglob("*.py")
        if (path.name.startswith("test_") or path.name == "conftest.py")
        and not path.is_relative_to(system)
        and path != LAB_FIXTURE
    )


def test_module_names_follow_paths() -> None:
    assert module_of(TESTS / "support" / "scenarios.py") == "tests.support.scenarios"
    assert module_of(TESTS / "cli" / "__init__.py") == "tests.cli"


def test_the_checker_reads_lazy_and_type_only_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from vhtrace.lab.qemu import Qemu\n"
        "def f():\n    import tests.support.scenarios\n"
    )
    found = imported_modules(probe)
    assert {"vhtrace.lab.qemu", "vhtrace.lab.qemu.Qemu", "tests.support.scenarios"} <= found


def test_the_checker_follows_tests_helpers(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from tests.support import scenarios\n")
    chain = reaches(probe, "vhtrace.lab", repo_test_modules())
    assert chain is not None and chain[-1].startswith("vhtrace.lab"), chain
    assert "tests.support.scenarios" in chain
    probe.write_text("from tests.support import synthetic\n")
    assert reaches(probe, "vhtrace.lab", repo_test_modules()) is None


def test_the_package_never_imports_the_tests() -> None:
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        for name in sorted(imported_modules(path))
        if is_within(name, "tests")
    ]
    assert offenders == []


def test_unit_tests_do_not_import_the_lab() -> None:
    files = unit_test_files()
    assert TESTS / "protocol" / "test_spec.py" in files
    assert not any(path.is_relative_to(TESTS / "system") for path in files)
    modules = repo_test_modules()
    offenders = {
        str(path.relative_to(REPO)): " -> ".join(chain)
        for path in files
        if (chain := reaches(path, "vhtrace.lab", modules)) is not None
    }
    assert offenders == {}
