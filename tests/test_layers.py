"""The package's layers, kept by reading every import with ``ast`` (an import-linter-like contract
without the dependency). CONTRIBUTING.md explains the layers; a failure names the module, the line
and the import that breaks a rule.

Rules (``src/tinyset``):

1. data/, models/, kd/, quant/, param/, utils/ never import methods/, eval/, artifact/, teachers/,
   jobs/ or cli/;
2. artifact/ and eval/ never import methods/ or jobs/ (nor teachers/ or cli/);
3. teachers/ never imports methods/, jobs/ or cli/;
4. methods/ never imports jobs/ or cli/;
5. no module imports the package root ``tinyset`` itself (it imports the methods and the jobs), except
   ``__init__``, ``__main__`` and the deprecation shims;
6. no import cycle between the top-level rooms (subpackages and top-level modules; shims left out);
7. only cli/ calls ``print``: library code logs.

Relative imports are resolved, ``from pkg import name`` counts as an import of ``pkg.name`` when that
is a module, and imports inside functions count like the others.
"""
from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = "tinyset"

# Deprecated aliases of moved modules (kept for one release): they import their new home and are
# outside the rules.
SHIMS = frozenset(f"{PACKAGE}.{m}" for m in ("pipeline", "teacher", "kd_run", "compress", "budget", "plan",
                                              "validate", "cli_quant", "ssl"))

LOW = ("data", "models", "kd", "quant", "param", "utils")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    **{room: ("methods", "eval", "artifact", "teachers", "jobs", "cli") for room in LOW},
    "artifact": ("methods", "jobs", "teachers", "cli"),
    "eval": ("methods", "jobs", "teachers", "cli"),
    "teachers": ("methods", "jobs", "cli"),
    "methods": ("jobs", "cli"),
}
PRINTERS = ("cli",)  # the only rooms that may call print()
ROOT_IMPORTERS = ("__init__", "__main__")  # besides the shims, who may import the package root


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. tinyset.jobs.distill
    target: str  # the imported module, resolved, e.g. tinyset.teachers.supervised
    names: tuple[str, ...]  # what was taken from the root when target is the root (else empty)
    path: Path
    line: int
    code: str  # the import as written

    def where(self) -> str:
        return f"{self.module} ({self.path.name}:{self.line}: `{self.code}`)"


def _module_name(path: Path, src: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(src).with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_pkg else parts), is_pkg


def _is_module(name: str, src: Path) -> bool:
    p = src.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports_of(path: Path, src: Path, package: str = PACKAGE) -> list[Import]:
    """Every import of ``package`` in the file at ``path`` (anywhere in it, functions included)."""
    module, is_pkg = _module_name(path, src)
    here = module.split(".") if is_pkg else module.split(".")[:-1]
    text = path.read_text()
    tree = ast.parse(text, filename=str(path))
    found: list[Import] = []
    for node in ast.walk(tree):
        code = ast.get_source_segment(text, node) if isinstance(node, (ast.Import, ast.ImportFrom)) else None
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    found.append(Import(module, alias.name, (), path, node.lineno, code or alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(here) - 1:
                    raise ValueError(f"{path}:{node.lineno}: relative import beyond the top-level package")
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == package or target.startswith(package + ".")):
                continue
            from_root: list[str] = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if alias.name != "*" and _is_module(sub, src):
                    found.append(Import(module, sub, (), path, node.lineno, code or sub))
                elif target == package:
                    from_root.append(alias.name)
                else:
                    found.append(Import(module, target, (), path, node.lineno, code or target))
            if from_root:
                found.append(Import(module, target, tuple(from_root), path, node.lineno, code or target))
    return found


def _room(module: str, package: str = PACKAGE) -> str:
    """``tinyset.jobs.distill`` -> ``jobs``; ``tinyset.config`` -> ``config``; the root -> ``tinyset``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else package


def _prints(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]


def _cycles(edges: dict[str, dict[str, Import]]) -> list[tuple[list[str], list[str]]]:
    """Strongly connected rooms (Tarjan): (one cycle through them, all of them) for each group."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    sccs: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    cycles = []
    for comp in sccs:  # one concrete cycle inside the component, for the message
        members, start = set(comp), comp[0]
        path, seen = [start], {start}
        while True:
            nxt = next(w for w in sorted(edges[path[-1]]) if w in members)
            if nxt in seen:
                cycles.append((path[path.index(nxt):] + [nxt], comp))
                break
            path.append(nxt)
            seen.add(nxt)
    return cycles


def check_layers(src: Path = SRC, package: str = PACKAGE, shims: frozenset[str] = SHIMS) -> list[str]:
    """Every rule broken under ``src/package``, one line each naming the module and the import."""
    problems: list[str] = []
    edges: dict[str, dict[str, Import]] = {}
    for path in sorted((src / package).rglob("*.py")):
        module, _ = _module_name(path, src)
        if module in shims:
            continue
        room = _room(module, package)
        leaf = module.rsplit(".", 1)[-1] if module != package else "__init__"
        for imp in imports_of(path, src, package):
            if imp.target in shims:
                problems.append(f"{imp.where()} imports the deprecated alias {imp.target}; import its new home")
                continue
            to = _room(imp.target, package)
            if imp.target == package and module != package and leaf not in ROOT_IMPORTERS:
                what = f" ({', '.join(imp.names)})" if imp.names else ""
                problems.append(f"{imp.where()} imports the package root {package}{what}: nothing under the package "
                                f"imports the root (it imports every method); import the module that defines it")
                continue
            if to in FORBIDDEN.get(room, ()):
                problems.append(f"{imp.where()} imports {imp.target}: {room}/ must not import {to}/ "
                                f"(it may not import {', '.join(r + '/' for r in FORBIDDEN[room])})")
            if to != room and module != package:
                edges.setdefault(room, {}).setdefault(to, imp)
                edges.setdefault(to, {})
        if room not in PRINTERS:
            for line in _prints(path):
                problems.append(f"{module} ({path.name}:{line}) calls print(): only cli/ prints; library code logs "
                                f"(logging.getLogger(__name__))")
    for cycle, group in _cycles(edges):
        steps = "; ".join(f"{a} -> {b} via {edges[a][b].where()}" for a, b in zip(cycle, cycle[1:]))
        others = f" (rooms in cycles with each other: {', '.join(group)})" if len(group) > len(cycle) - 1 else ""
        problems.append(f"import cycle between rooms {' -> '.join(cycle)}: {steps}{others}")
    return problems


# ------------------------------------------------------------------------------------------------
# the real package
# ------------------------------------------------------------------------------------------------


def test_package_keeps_its_layers():
    problems = check_layers()
    assert not problems, "layer rules broken (see CONTRIBUTING.md, 'Layers'):\n" + "\n".join(problems)


def test_the_rooms_are_the_documented_ones():
    rooms = {p.name for p in (SRC / PACKAGE).iterdir() if p.is_dir() and any(p.glob("*.py"))}
    for room in rooms:  # a regular package each (setuptools' find_packages skips a folder without one)
        assert (SRC / PACKAGE / room / "__init__.py").is_file(), room
    assert rooms == {"artifact", "cli", "data", "eval", "jobs", "kd", "methods", "models", "param", "quant",
                     "report", "teachers", "utils"}, rooms
    assert not (SRC / PACKAGE / "ssl").exists()  # split into teachers/, jobs/, data/views.py, models/encoder.py
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    for room in rooms:
        assert f"`{room}/`" in contributing, f"CONTRIBUTING.md does not describe {room}/"


def test_checker_sees_imports_the_package_really_has():
    """Guards the checker itself: known imports of the real tree are found and resolved."""
    imps = {(i.module, i.target) for p in (SRC / PACKAGE).rglob("*.py") for i in imports_of(p, SRC)}
    assert ("tinyset.jobs.distill", "tinyset.teachers.supervised") in imps  # relative, two dots
    assert ("tinyset.jobs.distill", "tinyset.jobs.distill_ssl") in imps  # inside a function
    assert ("tinyset.jobs.distill", "tinyset.distributed") in imps  # `from .. import distributed`
    assert ("tinyset.methods.krr_st", "tinyset.teachers.ssl") in imps


# ------------------------------------------------------------------------------------------------
# the checker on planted violations
# ------------------------------------------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    for rel, text in files.items():
        p = src / PACKAGE / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    for d in [p for p in (src / PACKAGE).rglob("*") if p.is_dir()] + [src / PACKAGE]:
        (d / "__init__.py").touch()
    return src


CLEAN = {
    "__init__.py": "from ._version import __version__\n\ndef distill():\n    from .jobs.distill import run\n    return run()\n",
    "_version.py": "__version__ = '1'\n",
    "errors.py": "class TinysetError(Exception):\n    pass\n",
    "data/base.py": "from ..errors import TinysetError\n",
    "data/views.py": "import torch\n",
    "quant/base.py": "from ..data.base import TinysetError\n",
    "methods/e2d.py": "from ..data.views import torch\nfrom ..teachers import ssl\n",
    "teachers/ssl.py": "from ..data import base\n",
    "artifact/format.py": "from .._version import __version__\nfrom ..quant.base import TinysetError\n",
    "jobs/distill.py": "from ..methods import e2d\nfrom ..artifact import format\n\ndef run():\n    return e2d\n",
    "cli/main.py": "from ..jobs import distill\n\ndef main():\n    print(distill)\n",
    "__main__.py": "from .cli.main import main\n",
    "pipeline.py": "import warnings\nfrom .jobs import distill as _moved\n",
}


def test_checker_passes_a_clean_tree(tmp_path):
    assert check_layers(_tree(tmp_path, CLEAN), shims=frozenset({"tinyset.pipeline"})) == []


@pytest.mark.parametrize("rel, code, expect", [
    # a low layer importing upward, relative, inside a function
    ("data/augment.py", "def f():\n    from ..methods import e2d\n    return e2d\n",
     ["tinyset.data.augment (augment.py:2: `from ..methods import e2d`) imports tinyset.methods.e2d: data/ must not import methods/",
      "import cycle between rooms data -> methods -> data"]),  # an upward import closes a cycle too
    # absolute import of a higher layer from quant/
    ("quant/inloop.py", "import tinyset.artifact.format\n",
     ["tinyset.quant.inloop (inloop.py:1: `import tinyset.artifact.format`) imports tinyset.artifact.format: quant/ must not import artifact/",
      "import cycle between rooms artifact -> quant -> artifact"]),
    # the artifact importing a job
    ("artifact/store.py", "from ..jobs.distill import run\n",
     ["tinyset.artifact.store (store.py:1: `from ..jobs.distill import run`) imports tinyset.jobs.distill: artifact/ must not import jobs/",
      "import cycle between rooms artifact -> jobs -> artifact"]),
    # a method importing the CLI
    ("methods/dm.py", "from ..cli import main\n", ["imports tinyset.cli.main: methods/ must not import cli/", "import cycle between rooms cli -> jobs -> methods -> cli"]),
    # the package root for its version, both spellings
    ("utils/runlog.py", "def versions():\n    from .. import __version__\n    return __version__\n",
     ["tinyset.utils.runlog (runlog.py:2: `from .. import __version__`) imports the package root tinyset (__version__)"]),
    ("artifact/format2.py", "def v():\n    import tinyset\n    return tinyset.__version__\n",
     ["tinyset.artifact.format2 (format2.py:2: `import tinyset`) imports the package root tinyset"]),
    # library code printing
    ("methods/rded.py", "def run():\n    print('done')\n", ["tinyset.methods.rded (rded.py:2) calls print(): only cli/ prints"]),
    # a room no rule names may import below it (report/ reads artifacts)
    ("report/runs.py", "from ..artifact import format\n", []),
    # a module importing a deprecated alias instead of its new home
    ("jobs/kd.py", "from ..pipeline import _moved\n", ["tinyset.jobs.kd (kd.py:1: `from ..pipeline import _moved`) imports the deprecated alias tinyset.pipeline"]),
])
def test_checker_reports_a_planted_violation(tmp_path, rel, code, expect):
    files = {**CLEAN, rel: code}
    problems = check_layers(_tree(tmp_path, files), shims=frozenset({"tinyset.pipeline"}))
    for text in expect:
        assert any(text in p for p in problems), f"expected {text!r} in:\n" + "\n".join(problems)
    assert len(problems) == len(expect), "\n".join(problems)


def test_checker_reports_a_cycle_with_its_imports(tmp_path):
    files = {**CLEAN, "report/runs.py": "from ..artifact import format\n",
             "artifact/preview.py": "def grid():\n    from ..report.runs import format\n"}
    problems = check_layers(_tree(tmp_path, files), shims=frozenset({"tinyset.pipeline"}))
    assert len(problems) == 1, problems
    assert problems[0].startswith("import cycle between rooms artifact -> report -> artifact")
    assert "tinyset.artifact.preview (preview.py:2: `from ..report.runs import format`)" in problems[0]
    assert "tinyset.report.runs (runs.py:1: `from ..artifact import format`)" in problems[0]


def test_checker_resolves_relative_imports_from_a_package_init(tmp_path):
    # in a package's __init__, `from . import x` is the package's own submodule, `from .. import x` the parent's
    files = {**CLEAN, "kd/__init__.py": "from . import losses\nfrom ..teachers import ssl\n", "kd/losses.py": ""}
    problems = check_layers(_tree(tmp_path, files), shims=frozenset({"tinyset.pipeline"}))
    assert len(problems) == 1 and "tinyset.kd (__init__.py:2: `from ..teachers import ssl`) imports tinyset.teachers.ssl: " \
        "kd/ must not import teachers/" in problems[0], problems
