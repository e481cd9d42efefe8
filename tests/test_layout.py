"""The house's rules, read from the source: the runtime package and the job entrypoints import no
test or benchmark support, and the core imports no tool.  Unit tests (ast only, nothing run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imports_of(path: Path, root: Path = REPO) -> set:
    """Every module a file imports, absolute (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = list(path.relative_to(root).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                out.add(mod)
                if not node.module:  # from . import x
                    out.update(f"{mod}.{a.name}" for a in node.names)
            else:
                out.add(node.module)
    return out


def sources(*folders: str):
    for folder in folders:
        yield from sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", ["pipeline", "jobs"])
def test_runtime_imports_no_test_or_benchmark_support(folder):
    bad = {str(p.relative_to(REPO)): sorted(m for m in imports_of(p) if m.split(".")[0] in ("tests", "benchmarks"))
           for p in sources(folder)}
    assert not {k: v for k, v in bad.items() if v}


def test_core_imports_no_tool():
    """Tools (report, calibrate, nightly, ...) build on the core; the core never reaches up into
    them.  ``cli.py`` is the one place that wires tools to the command line."""
    core = [p for p in sources("pipeline") if "tools" not in p.parts and p.name != "cli.py"]
    assert core, "no core modules found"
    bad = {str(p.relative_to(REPO)): sorted(m for m in imports_of(p) if m.startswith("pipeline.tools"))
           for p in core}
    assert not {k: v for k, v in bad.items() if v}


def _module_exists(root: Path, module: str) -> bool:
    path = root.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def relative_imports(path: Path, root: Path = REPO) -> list:
    """The modules a file's relative imports name (``from .x import y`` -> ``pkg.x``, or
    ``pkg.x.y`` when y is a module), resolved against its package."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = list(path.relative_to(root).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            mod = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
            out.append(mod)
    return out


@pytest.mark.parametrize("folder", ["pipeline", "jobs", "benchmarks", "tests"])
def test_every_relative_import_names_a_module_of_this_tree(folder):
    """Code moved between packages keeps no relative import that pointed at its old neighbours
    (imports inside functions included, which run only on some paths: a GPU benchmark's, say)."""
    bad = {str(p.relative_to(REPO)): [m for m in relative_imports(p) if not _module_exists(REPO, m)]
           for p in sources(folder)}
    assert not {k: v for k, v in bad.items() if v}


def test_the_rule_is_able_to_fail(tmp_path):
    """The import reader sees the forms a violation could take (absolute, relative, inside a
    function), so the two tests above can fail."""
    (tmp_path / "pipeline").mkdir()
    f = tmp_path / "pipeline" / "probe.py"
    f.write_text("def f():\n    from tests.support import s3local\n    from .tools import report\n"
                 "    import benchmarks.validity\n")
    mods = imports_of(f, tmp_path)
    assert {"tests.support", "pipeline.tools", "benchmarks.validity"} <= mods
    (tmp_path / "benchmarks").mkdir()
    g = tmp_path / "benchmarks" / "moved.py"
    g.write_text("def f():\n    from .config import load_config\n")
    assert relative_imports(g, tmp_path) == ["benchmarks.config"] and not _module_exists(tmp_path, "benchmarks.config")
