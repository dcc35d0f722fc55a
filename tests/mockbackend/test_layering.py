"""mockbackend's modules import each other without a circle; the context is a leaf.

Read from the source (every ``import`` statement, those under ``if TYPE_CHECKING:`` and
inside functions included), not from ``sys.modules``, so a circle hidden behind a lazy
or type-only import fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mockbackend
from mockbackend.context import ScriptView
from mockbackend.script import Script

PACKAGE = Path(mockbackend.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def known_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The mockbackend modules ``path`` imports (``from pkg import sub`` names ``pkg.sub``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module not in modules:
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    if path.is_relative_to(PACKAGE):
        found.discard(module_name(path))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = known_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (a path that comes back to its start), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            circle = visit(nxt, [*path, node])
            if circle:
                return circle
        done.add(node)
        return None

    for start in sorted(graph):
        circle = visit(start, [])
        if circle:
            return circle
    return None


def test_the_checker_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_circle(graph) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_checker_reads_type_checking_and_lazy_imports(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mockbackend.loop import ConnectionLoop\n"
        "def f():\n    from mockbackend import handlers\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = imports_of(path, known_modules())
    assert found == {"mockbackend.loop", "mockbackend.handlers"}


def test_mockbackend_has_no_import_circle() -> None:
    graph = import_graph()
    assert "mockbackend.context" in graph and "mockbackend.loop" in graph
    circle = find_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_context_is_below_handlers_channel_script_and_the_loop() -> None:
    graph = import_graph()

    def below(name: str) -> set[str]:
        seen: set[str] = set()
        todo = [name]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    above = {"mockbackend.handlers", "mockbackend.channel", "mockbackend.script"}
    assert not below("mockbackend.context") & (above | {"mockbackend.loop", "mockbackend"})
    for name in above:
        assert "mockbackend.context" in graph[name], f"{name} does not use the context"
    assert "mockbackend.context" in graph["mockbackend.loop"]


def test_script_is_what_the_context_reads() -> None:
    assert isinstance(Script(), ScriptView)


def test_the_old_name_of_answer_still_imports() -> None:
    from mockbackend import Answer, Reply
    from mockbackend.messages import Reply as ReplyFromMessages

    assert Reply is Answer and ReplyFromMessages is Answer
    assert Reply.ack(1).fields == {"value": 1}
