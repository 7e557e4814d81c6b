"""Tests for the package Modules as a whole: the import rule that shows its architecture.

Every `import` of a `Modules` module anywhere under Code/Modules (at the top
of a file or inside a function) is an edge of the import graph. The rule:

* no circle, in the whole graph;
* nothing imports upward: each part of the package may import only the
  parts listed for it in `MAY_IMPORT` (and modules of its own subpackage).
  The sans-IO stack (wire) knows nothing of processes; the database knows
  nothing of the server's or the client's processes; the server reaches
  the database only through its link and the monitor's entry point; the
  client never imports the server, the database or the server-side
  runtime.

Also here: every module opens with a docstring, every test module of the
package mirrors a module, and every module has a test module.
"""

import ast
import os

import pytest

from Tests.support import CODE_DIR

MODULES_DIR = os.path.join(CODE_DIR, "Modules")
TESTS_DIR = os.path.join(CODE_DIR, "Tests")

# part -> the parts it may import. A part is a top-level module or subpackage of
# Modules, or one module of a subpackage where only that one is allowed.
MAY_IMPORT = {
    "rules": set(),
    "operations": {"rules"},
    "wire": {"rules", "operations"},
    "identity": {"wire"},
    "runtime": set(),
    "database": {"rules", "operations", "wire", "runtime", "identity"},
    "server": {"rules", "operations", "wire", "identity", "runtime",
               "database.link", "database.monitor"},
    "client": {"rules", "operations", "wire", "identity"},
}
# Test modules that cover no single module (they mirror the package or the system).
WHOLE_PACKAGE_TESTS = {"test_modules.py"}


def module_files():
    """{dotted name: path} of every module under Code/Modules."""
    found = {}
    for folder, _dirs, files in os.walk(MODULES_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, CODE_DIR)[:-3].replace(os.sep, ".")
                found[relative.removesuffix(".__init__")] = path
    return found


def imports_of(path, known):
    """The Modules modules that the file at `path` imports (anywhere in it)."""
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("Modules.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and (node.module == "Modules" or node.module.startswith("Modules.")):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return found - {"Modules"}


def import_graph():
    files = module_files()
    return {name: imports_of(path, files) for name, path in files.items()}


def part_of(module):
    """'server' for Modules.server.daemon, 'rules' for Modules.rules."""
    return module.split(".")[1] if module.count(".") >= 1 else ""


def allowed(importer, imported):
    source, target = part_of(importer), part_of(imported)
    if source == target:
        return True
    grants = MAY_IMPORT[source]
    return target in grants or ".".join(imported.split(".")[1:3]) in grants


def test_every_part_of_the_package_is_in_the_rule():
    parts = {part_of(name) for name in module_files() if name != "Modules"}
    assert parts == set(MAY_IMPORT)


def test_nothing_imports_upward():
    wrong = sorted((importer, imported) for importer, targets in import_graph().items()
                   for imported in targets if not allowed(importer, imported))
    assert not wrong, f"imports against the rule (importer, imported): {wrong}"


def find_cycle(graph):
    """One circle of the graph as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "visiting"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "visiting":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [node])
            if cycle:
                return cycle
    return None


def test_no_import_forms_a_circle():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("importer, imported, verdict", [
    ("Modules.wire.protocol", "Modules.server.daemon", False),
    ("Modules.client.cli", "Modules.database.link", False),
    ("Modules.client.cli", "Modules.runtime", False),
    ("Modules.database.monitor", "Modules.server.spares", False),
    ("Modules.server.daemon", "Modules.database.storage", False),
    ("Modules.server.user_process", "Modules.database.link", True),
    ("Modules.wire.protocol", "Modules.operations", True),
])
def test_the_rule_says_what_it_means(importer, imported, verdict):
    assert allowed(importer, imported) is verdict


def test_every_module_opens_with_a_docstring():
    missing = []
    for name, path in module_files().items():
        with open(path, encoding="utf-8") as source:
            if not ast.get_docstring(ast.parse(source.read())):
                missing.append(name)
    assert not missing


def test_tests_mirror_the_modules():
    modules = {os.path.relpath(path, MODULES_DIR) for name, path in module_files().items()
               if not path.endswith("__init__.py")}
    expected = {os.path.join(os.path.dirname(m), "test_" + os.path.basename(m))
                for m in modules}
    present = set()
    for folder, _dirs, files in os.walk(TESTS_DIR):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                present.add(os.path.relpath(os.path.join(folder, name), TESTS_DIR))
    assert not expected - present, f"modules without a test module: {expected - present}"
    strays = {test for test in present - expected
              if not test.startswith("system" + os.sep) and test not in WHOLE_PACKAGE_TESTS}
    assert not strays, f"test modules that mirror no module: {strays}"
