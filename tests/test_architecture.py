"""The package's import rules (docs/architecture.md): parts import only downwards, and no module imports itself
back through others. Every import counts, also those inside functions."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "spectr_lib"

# part -> the parts it may import (besides itself)
ALLOWED = {
    "paths": set(),
    "runtime": set(),
    "argtypes": set(),
    "files": set(),
    "theory": set(),
    "prompts": {"paths"},
    "models": {"paths", "theory", "runtime", "files"},  # runtime: the CPU's flags (models/matmul_order.py) and attention backends
    "engine": {"theory", "models", "prompts", "paths", "runtime", "files"},
    "widgets": {"theory"},
    "distill": {"theory", "models", "prompts", "paths", "runtime", "argtypes", "files"},
    "tools": {"theory", "models", "prompts", "paths", "runtime", "engine", "widgets", "distill", "argtypes", "files"},
    "__init__": {"engine", "models"},
}


def modules(pkg: Path = PKG) -> dict[str, Path]:
    return {".".join(p.relative_to(pkg.parent).with_suffix("").parts): p for p in pkg.rglob("*.py")}


def imports_of(name: str, path: Path) -> set[str]:
    """Dotted spectr_lib modules imported by one module (relative imports resolved)."""
    package = name.split(".")[:-1]  # the package a relative import starts from (for __init__ too)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("spectr_lib"):
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)  # `from . import x` imports module x
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("spectr_lib"))
    return out


def part(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__init__":
        return "__init__"
    return parts[1]


def graph(pkg: Path = PKG) -> dict[str, set[str]]:
    mods = modules(pkg)
    known = set(mods)
    g = {}
    for name, path in mods.items():
        targets = set()
        for m in imports_of(name, path):
            while m and m not in known and f"{m}.__init__" not in known:
                m = m.rpartition(".")[0]
            if m in known:
                targets.add(m)
            elif f"{m}.__init__" in known:
                targets.add(f"{m}.__init__")
        g[name] = targets - {name}
    return g


def violations(pkg: Path = PKG) -> list[str]:
    """Every import of the package that breaks ALLOWED."""
    bad = []
    for name, targets in graph(pkg).items():
        for t in targets:
            src, dst = part(name), part(t)
            if dst != src and dst not in ALLOWED[src] and not t.endswith("__init__"):
                bad.append(f"{name} imports {t} ({src} may import only {sorted(ALLOWED[src])})")
    return bad


def find_cycle(pkg: Path = PKG) -> list[str] | None:
    """One import cycle of the package, or None."""
    g = graph(pkg)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in g.get(n, ()):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        state[n] = 2
        stack.pop()
        return None

    for n in g:
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_parts_import_only_what_the_rules_allow():
    bad = violations()
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    cycle = find_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_rules_can_fail(tmp_path):
    """Both checks catch what they exist for, planted in a copy of the package: an upward import inside a function
    (models importing the engine) and a cycle between two engine modules."""
    import shutil

    def copy(name: str) -> Path:
        pkg = tmp_path / name / "spectr_lib"
        shutil.copytree(PKG, pkg, ignore=shutil.ignore_patterns("__pycache__"))
        return pkg

    upward, cyclic = copy("upward"), copy("cyclic")
    assert violations(upward) == [] and find_cycle(cyclic) is None
    load = upward / "models" / "load.py"
    load.write_text(load.read_text() + "\n\ndef _planted():\n    from ..engine.decoder import generate\n")
    assert violations(upward) == ["spectr_lib.models.load imports spectr_lib.engine.decoder "
                                  "(models may import only ['files', 'paths', 'runtime', 'theory'])"]
    metrics = cyclic / "engine" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\nfrom .session import Session\n")  # session imports metrics
    cycle = find_cycle(cyclic)
    assert violations(cyclic) == [] and cycle is not None
    assert {"spectr_lib.engine.metrics", "spectr_lib.engine.session"} <= set(cycle)
