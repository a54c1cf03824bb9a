"""The package's layout: families meet only through public names, and no module imports itself
back through others (ast, no import of jaxcert needed)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jaxcert"


def _modules():
    """{dotted module name: path} of every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("jaxcert", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name, path):
    """The modules `name` imports at any depth of its code: (module, imported name or None)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((a.name, None) for a in node.names if a.name.startswith("jaxcert"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1],
                                 *([base] if base else [])])  # fmt: skip
            if not base.startswith("jaxcert"):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full, None) if full in MODULES else (base, alias.name)


def _family(module):
    """The subpackage a module belongs to (jaxcert.bounds, ...), or None for a top-level one."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and ".".join(parts[:2]) in MODULES and (
        MODULES[".".join(parts[:2])].name == "__init__.py") else None  # fmt: skip


def test_no_module_imports_a_private_name_of_another_subpackage():
    crossings = []
    for name, path in MODULES.items():
        for target, imported in _imports(name, path):
            family = _family(target)
            if family is None or family == _family(name):
                continue
            private = [p for p in target.split(".") if p.startswith("_")]
            if private or (imported or "").startswith("_"):
                crossings.append(f"{name} imports {target}{'.' + imported if imported else ''}")
    assert crossings == [], crossings


def test_no_import_cycle():
    """Between modules (a package's __init__ aside, which gathers its own modules): no module
    reaches itself again through the modules it imports."""
    graph = {}
    for name, path in MODULES.items():
        if path.name == "__init__.py":
            continue
        targets = set()
        for target, _ in _imports(name, path):
            if MODULES.get(target, Path()).name == "__init__.py":
                continue  # a package's public names: its __init__ gathers them, not a cycle
            targets.add(target)
        graph[name] = targets - {name}
    cycles = []

    def visit(module, trail):
        for nxt in graph.get(module, ()):
            if nxt in trail:
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, trail + [nxt])
        done.add(module)

    done = set()
    for module in graph:
        if module not in done:
            visit(module, [module])
    assert cycles == [], cycles
