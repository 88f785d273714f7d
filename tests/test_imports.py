"""The import contract (docs/architecture.md): one-way layers, read from every module's source.

    models  <-  core  <-  config  <-  data  <-  train  <-  launch  <-  matrix
                core  <-  report  <-  matrix

A module imports from its own layer or a lower one; ``report`` reads files through ``results``
(core) only; ``models`` never imports ``ablate``. Imports inside functions count too, and one of
our own modules imported inside a function needs a ``# deferred:`` comment saying why (on its
line or the line above), so the graph stays visible at the top of each file.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.errors import assert_one_error_line

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module belongs to the longest prefix listed.
LAYERS = {
    "models": 0,
    "ablate": 1,  # core: errors, atomic, console, results, outcome, plugins
    "ablate.config": 2,
    "ablate.schema": 2,
    "ablate.compose": 2,
    "ablate.keydocs": 2,  # the key reference: generated from the config schema
    "ablate.provenance": 2,  # a job's identity components: needs the config schema and models
    "ablate.data.config": 2,  # DataConfig: a leaf of the config schema (imports nothing of ours)
    "ablate.data": 3,
    "ablate.train": 4,
    "ablate.launch": 5,
    "ablate.report": 5,  # beside launch; may import only core (checked below)
    "ablate.runs": 5,  # the runs index: like the report, reads result files through core only
    "ablate.matrix": 6,
}
REPORT_MAY_IMPORT = {
    "ablate",
    "ablate.errors",
    "ablate.results",
    "ablate.outcome",
    "ablate.atomic",
    "ablate.identity",
}


def _layer(module: str) -> tuple[str, int]:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return best, LAYERS[best]


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield ".".join(parts), path, is_pkg


def _imports(module: str, path: Path, is_pkg: bool):
    """(imported module, line, nested) for every import of our own packages."""
    package = module.split(".") if is_pkg else module.split(".")[:-1]
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            # `from ablate import results` imports the module ablate.results
            names = [
                f"{mod}.{a.name}"
                if (SRC / Path(*f"{mod}.{a.name}".split("."))).with_suffix(".py").exists()
                or (SRC / Path(*f"{mod}.{a.name}".split("."))).is_dir()
                else mod
                for a in node.names
            ]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("ablate", "models"):
                yield name, node.lineno, id(node) not in top and not _module_level(tree, node)


def _module_level(tree: ast.Module, node: ast.AST) -> bool:
    """True for imports under a module-level ``if``/``try`` (not inside a def or class)."""
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if any(n is node for n in ast.walk(stmt)):
            return True
    return False


def test_imports_go_one_way_only():
    wrong = []
    for module, path, is_pkg in _modules():
        src_layer, src_rank = _layer(module)
        for name, line, _ in _imports(module, path, is_pkg):
            dst_layer, dst_rank = _layer(name)
            where = f"{path.relative_to(SRC)}:{line}: {module} imports {name}"
            if dst_rank > src_rank:
                wrong.append(f"{where} ({src_layer} is below {dst_layer})")
            elif (
                src_layer in ("ablate.report", "ablate.runs")
                and dst_layer != src_layer
                and name not in REPORT_MAY_IMPORT
            ):
                wrong.append(f"{where} ({src_layer} reads files through core modules only)")
            elif (
                src_layer == "ablate.launch"
                and dst_layer == "ablate.report"
                or src_layer == "ablate.report"
                and dst_layer == "ablate.launch"
            ):
                wrong.append(f"{where} (launch and report do not know each other)")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_our_own_modules_are_imported_at_the_top_or_say_why_not():
    hidden = []
    for module, path, is_pkg in _modules():
        lines = path.read_text().splitlines()
        for name, line, nested in _imports(module, path, is_pkg):
            if not nested:
                continue
            here = lines[line - 1] + (lines[line - 2] if line >= 2 else "")
            if "# deferred:" not in here:
                hidden.append(f"{path.relative_to(SRC)}:{line}: {name}")
    assert not hidden, (
        "imports of our own modules inside functions, without a '# deferred:' reason:\n"
        + "\n".join(hidden)
    )


def test_the_contract_catches_a_back_arrow(tmp_path):
    # The checker itself: a data module importing the matrix is a violation.
    assert _layer("ablate.data.loader")[1] < _layer("ablate.matrix.runner")[1]
    assert _layer("ablate.data.config")[1] < _layer("ablate.data.loader")[1]
    assert _layer("models.gpt2")[1] < _layer("ablate.errors")[1]
    assert _layer("ablate.launch.slurm.poll")[1] < _layer("ablate.matrix")[1]


def test_a_long_module_says_at_its_top_why_it_is_long():
    # Small readable modules: past ~400 lines a module's docstring says why it is not split.
    long = []
    for _module, path, _ in _modules():
        text = path.read_text()
        if len(text.splitlines()) > 420:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "over 400 lines" not in doc.lower():
                long.append(f"{path.relative_to(SRC)} ({len(text.splitlines())} lines)")
    assert not long, "modules over 400 lines without a reason at their top:\n" + "\n".join(long)


_NO_TORCH_PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("TORCH-LOADED" if "torch" in sys.modules else "NO-TORCH")
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["ablate.matrix", "--help"],
        ["ablate.matrix", "step=v16"],
        ["ablate.matrix", "experiment=smoke", "budget.box_seconds=ten"],
        ["ablate.matrix", "experiment=smoke", "budget.nosuch=1"],
        ["ablate.data", "--help"],
        ["ablate.data", "data=nosuch"],
    ],
    ids=lambda a: " ".join(a),
)
def test_help_and_a_typo_are_answered_without_importing_torch(argv):
    # torch's import takes seconds; --help and a mistyped command line never wait for it
    # (benchmarks/bench_cli.py measures the times).
    r = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_PROBE, *argv], capture_output=True, text=True, timeout=120
    )
    assert r.stdout.strip().splitlines()[-1] == "NO-TORCH", r.stdout[-2000:] + r.stderr[-2000:]
    if "--help" not in argv:
        assert_one_error_line(r.stderr)


_LIST_EDITS = frozenset(
    {"append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse"}
    | {"__setitem__", "__delitem__", "__iadd__", "__imul__"}
)


def sys_path_edits(source: str) -> list[int]:
    """The lines of ``source`` that change ``sys.path`` directly: assign it, or a slice or an item
    of it (``=``, ``+=``, ``[:] =``, ``del``), call a list method that changes it (insert, append,
    remove, extend, pop, ...), or ``setattr(sys, "path", ...)``; also through ``import sys as s``
    and ``from sys import path``. pytest's ``monkeypatch`` (``setattr(sys, "path", ...)``,
    ``syspath_prepend``) puts it back after the test and is the way to change it."""
    tree = ast.parse(source)
    sys_names, path_names = {"sys"}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            sys_names |= {a.asname or a.name for a in node.names if a.name == "sys"}
        elif isinstance(node, ast.ImportFrom) and node.module == "sys":
            path_names |= {a.asname or a.name for a in node.names if a.name == "path"}

    def is_path(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in path_names
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id in sys_names
        )

    lines = []
    for node in ast.walk(tree):
        stored = isinstance(getattr(node, "ctx", None), (ast.Store, ast.Del))
        if (
            (stored and is_path(node))
            or (stored and isinstance(node, ast.Subscript) and is_path(node.value))
            or (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _LIST_EDITS
                and is_path(node.func.value)
            )
            or (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "setattr"
                and len(node.args) >= 2
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id in sys_names
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value == "path"
            )
        ):
            lines.append(node.lineno)
    return sorted(set(lines))


@pytest.mark.parametrize(
    "edit",
    [
        "sys.path.insert(0, 'x')",
        "sys.path.append('x')",
        "sys.path.extend(['x'])",
        "sys.path.remove('x')",
        "sys.path.pop()",
        "sys.path.clear()",
        "sys.path = ['x']",
        "sys.path[:] = saved",
        "sys.path[:] = [p for p in sys.path if p != 'x']",
        "sys.path[0] = 'x'",
        "sys.path += ['x']",
        "del sys.path[0]",
        "del sys.path[:1]",
        "sys.path, other = ['x'], 1",
        "setattr(sys, 'path', ['x'])",
        "import sys as s\ns.path.insert(0, 'x')",
        "from sys import path\npath.append('x')",
        "from sys import path as p\np[:] = []",
    ],
)
def test_each_direct_edit_of_sys_path_is_found(edit):
    source = (
        f"import sys\n\n\ndef test(saved, other):\n    {edit.replace(chr(10), chr(10) + '    ')}\n"
    )
    assert sys_path_edits(source), source


@pytest.mark.parametrize(
    "use",
    [
        "monkeypatch.setattr(sys, 'path', [*sys.path, 'x'])",
        "monkeypatch.syspath_prepend('x')",
        "saved = list(sys.path)",
        "first = sys.path[0]",
        "path = [p for p in sys.path if p]",
        "script = 'import sys; sys.path.insert(0, \"x\")'",
        "os.path.join('a', 'b')",
    ],
)
def test_reading_sys_path_or_monkeypatching_it_is_not_an_edit(use):
    assert sys_path_edits(f"import os\nimport sys\n\n\ndef test(monkeypatch):\n    {use}\n") == []


def test_no_test_edits_sys_path():
    """Shared test helpers are found through pyproject.toml's pytest ``pythonpath``: a test that
    changes sys.path makes the import order depend on which test ran first, and a test that must
    (a plugin folder) does it through ``monkeypatch``, which puts it back (``sys_path_edits``).
    (Code in a string, such as a script a test runs in a subprocess, is not the test's own path.)"""
    tests = Path(__file__).resolve().parent
    found = []
    for path in sorted(tests.rglob("*.py")):
        if "fixtures" in path.parts:
            continue
        for line in sys_path_edits(path.read_text(encoding="utf-8")):
            found.append(f"{path.relative_to(tests)}:{line}")
    assert not found, (
        "sys.path edited in tests (use pyproject's pythonpath, or monkeypatch):\n"
        + "\n".join(found)
    )


def _graph() -> dict[str, set[str]]:
    """Our modules and what each imports of ours, by module: every import statement counts,
    inside functions and under ``if TYPE_CHECKING:`` too (a circle a type checker needs is still
    a circle a reader must untie). ``from pkg import name`` counts as the module ``pkg.name`` when
    there is one, else as ``pkg``; a package's ``__init__`` counts as the package."""
    ours = {module for module, _, _ in _modules()}
    graph: dict[str, set[str]] = {}
    for module, path, is_pkg in _modules():
        deps = set()
        for name, _line, _nested in _imports(module, path, is_pkg):
            while name not in ours and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in ours and name != module:
                deps.add(name)
        graph[module] = deps
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_parent_package(a: str, b: str) -> bool:
    return b.startswith(a + ".") or a.startswith(b + ".")


KNOWN_CIRCLES: list[list[str]] = []  # circles left to untie (none now); this list only shrinks


def test_no_import_circles_type_checking_included():
    graph = _graph()
    # A package's __init__ importing its own submodules (lazy re-exports) and a submodule
    # importing a sibling through the package name are one unit, not a circle between modules.
    pruned = {m: {d for d in deps if not _is_parent_package(m, d)} for m, deps in graph.items()}
    circles = _circles(pruned)
    gone = [c for c in KNOWN_CIRCLES if c not in circles]
    assert not gone, f"circles untied: take them off KNOWN_CIRCLES: {gone}"
    circles = [c for c in circles if c not in KNOWN_CIRCLES]
    assert not circles, "import circles (TYPE_CHECKING imports included):\n" + "\n".join(
        " <-> ".join(c) for c in circles
    )


def test_the_circle_check_sees_a_type_checking_circle():
    # The checker itself: two modules that import each other, one only for type checking.
    graph = {"ablate.train.a": {"ablate.train.b"}, "ablate.train.b": {"ablate.train.a"}}
    assert _circles(graph) == [["ablate.train.a", "ablate.train.b"]]
    assert _circles({"ablate.x": {"ablate.y"}, "ablate.y": set()}) == []
    src = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ablate.train.trainer import Trainer\n"
    tree = ast.parse(src)
    found = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert [n.module for n in found if n.module.startswith("ablate")] == ["ablate.train.trainer"]


TRAINER_NAMES = {"tr", "trainer"}
TRAINER_TYPE = re.compile(r"\bTrainer\b")


def _takes_the_trainer(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, what) for each function or method with a parameter named for the trainer or
    annotated with it (``Trainer``, ``'Trainer'``, ``trainer.Trainer``, ``Trainer | None``)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        a = node.args
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
            if arg is None:
                continue
            ann = ast.unparse(arg.annotation) if arg.annotation is not None else ""
            if arg.arg in TRAINER_NAMES or TRAINER_TYPE.search(ann):
                name = getattr(node, "name", "<lambda>")
                found.append((node.lineno, f"{name}({arg.arg}{': ' + ann if ann else ''})"))
    return found


def test_trainer_parts_receive_what_they_need_not_the_trainer():
    # Issue 24: evaluator, recorder, recheck, cadence, clock... are built by the Trainer and
    # given explicit arguments; only trainer.py itself handles the Trainer.
    wrong = []
    for module, path, _ in _modules():
        if not module.startswith("ablate.") or module == "ablate.train.trainer":
            continue
        for line, what in _takes_the_trainer(ast.parse(path.read_text(), str(path))):
            wrong.append(f"{path.relative_to(SRC)}:{line}: {what}")
    assert not wrong, "functions outside trainer.py that take the trainer:\n" + "\n".join(wrong)


def test_the_trainer_check_sees_a_part_that_takes_the_trainer():
    # The checker itself: each way a part could take the whole trainer is found.
    for src in (
        "def evaluate(tr):\n    pass\n",
        "def write(trainer, final=False):\n    pass\n",
        "def f(t: Trainer) -> None:\n    pass\n",
        "def f(t: 'Trainer') -> None:\n    pass\n",
        "def f(t: trainer_mod.Trainer) -> None:\n    pass\n",
        "def f(t: Trainer | None = None) -> None:\n    pass\n",
        "f = lambda tr: tr.state\n",
        "class Recorder:\n    def __init__(self, owner: Trainer):\n        pass\n",
    ):
        assert _takes_the_trainer(ast.parse(src)), src
    for src in (
        "def f(trainable, train_model, rec: Recorder):\n    pass\n",
        "def f(x: TrainerConfig):\n    pass\n",
    ):
        assert not _takes_the_trainer(ast.parse(src)), src
