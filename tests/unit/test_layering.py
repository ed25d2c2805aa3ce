"""The package's layers, read from the source (imports inside functions included): each module imports
only its own layer and those below, the report reads only what the runs logged, and nothing is in a cycle.

    errors, paths, metrics, system, stats  <-  config, cache, tracking  <-  data, formats, engines
        <-  quality, benchmark, tasks  <-  stages  <-  job  <-  cli, sweep, sweep_stamp;   report <- config, tracking
"""

import ast

from helpers import ROOT

PACKAGE = ROOT / "runner"
LAYERS = [
    {"runner", "errors", "paths", "metrics", "system", "stats"},
    {"config", "cache", "tracking"},
    {"data", "formats", "engines"},
    {"quality", "benchmark", "tasks"},
    {"stages"},
    {"job"},
    {"report"},
    {"cli", "sweep", "sweep_stamp", "__main__"},
]
READS_ONLY = {"report": LAYERS[0] | LAYERS[1] | {"report"}}  # the report reads the store, never the pipeline
STANDALONE = ("runner.engines.workers",)  # run by other venvs' pythons: no runner import at all


def modules():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return found


def imports(name, path, known):
    """The runner modules `name` imports anywhere in its source, as module names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names if a.name.split(".")[0] == "runner"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            if base.split(".")[0] != "runner":
                continue
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {t for t in targets if t != name}


def graph():
    known = modules()
    edges = {}
    for name, path in known.items():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        deps = set()
        for target in imports(name, path, known):
            parts = target.split(".")
            # importing a.b.c runs a.b's __init__ first (except where the importer already lives inside it)
            deps |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} - own - {name}
        edges[name] = {d for d in deps if d in known}
    return edges


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "runner"
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def top_of(module: str) -> str:
    return module.split(".")[1] if "." in module else "runner"


def test_every_module_has_a_layer():
    assert [m for m in graph() if not any(top_of(m) in layer for layer in LAYERS)] == []


def test_imports_go_down_the_layers_only():
    wrong = []
    for module, deps in graph().items():
        for dep in deps:
            allowed = READS_ONLY.get(top_of(module))
            if (allowed is not None and top_of(dep) not in allowed) or layer_of(dep) > layer_of(module):
                wrong.append(f"{module} -> {dep}")
    assert sorted(wrong) == []


def test_out_of_venv_workers_import_no_runner_module():
    assert {m: sorted(d) for m, d in graph().items() if m.startswith(STANDALONE) and d} == {}


def test_no_import_cycle():
    edges, index, low, stack, on_stack, cycles = graph(), {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert cycles == []
