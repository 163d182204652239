"""The package's import rules (docs/architecture.md): parts import only downwards, and no module imports itself
back through others. Every import counts, also those inside functions."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "spectr_lib"

# part -> the parts it may import (besides itself)
ALLOWED = {
    "paths": set(),
    "runtime": set(),
    "theory": set(),
    "prompts": {"paths"},
    "models": {"paths", "theory", "runtime"},  # runtime: the output head's product (head_matmul) and the CPU's flags
    "engine": {"theory", "models", "prompts", "paths", "runtime"},
    "widgets": {"theory"},
    "distill": {"theory", "models", "prompts", "paths", "runtime", "engine"},  # engine: the float32 head decoding uses
    "tools": {"theory", "models", "prompts", "paths", "runtime", "engine", "widgets", "distill"},
    "__init__": {"engine", "models"},
}


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PKG.parent).with_suffix("").parts): p for p in PKG.rglob("*.py")}


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


def graph() -> dict[str, set[str]]:
    mods = modules()
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


def test_parts_import_only_what_the_rules_allow():
    bad = []
    for name, targets in graph().items():
        for t in targets:
            src, dst = part(name), part(t)
            if dst != src and dst not in ALLOWED[src] and not t.endswith("__init__"):
                bad.append(f"{name} imports {t} ({src} may import only {sorted(ALLOWED[src])})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    g = graph()
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
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_rules_can_fail():
    """The checker sees a real upward import: models must not import engine."""
    g = graph()
    assert "spectr_lib.models.load" in g["spectr_lib.engine.decoder"]
    assert "engine" not in ALLOWED["models"]
