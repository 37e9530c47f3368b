"""The package's import graph: one-way layers, no cycles, constants once.

Every module of `keras_interp/` is parsed with `ast` (nothing is imported),
including imports inside functions, so that a function-local import cannot
hide a cycle or an upward dependency. The layers, lowest first:

1. core: `templates`, `losses` and the other pure math modules,
   `distribute`;
2. `layers/`;
3. `models/`;
4. `evaluation/`;
5. `callbacks`, `diagnostics`, `trainers/` (the generic distributed loop);
6. `apps/` (the application layer) and the compatibility shim that
   re-exports it under its old name (`keras_interp.evaluate`).

A module imports only from its own layer or below. `data/` is a leaf: it
imports nothing of `keras_interp` outside `data/`, and only layers 4 to 6
import it. The package root (`keras_interp/__init__.py`) is the public
facade: it may import layers 1 to 5, never `apps/`, and no module imports
it.

Also checked here: the shared constants are assigned once, `beta`,
`center` and `normalization` defaults are named constants, a folder name
is written once, and no module is longer than `MAX_MODULE_LINES`.
"""

import ast
import collections
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
PACKAGE_NAME = "keras_interp"
PACKAGE = os.path.join(ROOT, PACKAGE_NAME)

CORE, LAYERS, MODELS, EVALUATION, DRIVERS, APPS = range(1, 7)
LAYER_NAMES = {
    CORE: "core",
    LAYERS: "layers",
    MODELS: "models",
    EVALUATION: "evaluation",
    DRIVERS: "callbacks/diagnostics/trainers",
    APPS: "apps",
}
# Packages, by their first name below `keras_interp`.
PACKAGE_LAYERS = {
    "layers": LAYERS,
    "models": MODELS,
    "evaluation": EVALUATION,
    "trainers": DRIVERS,
    "apps": APPS,
}
# Top-level modules. A new one must be placed here, in its layer.
MODULE_LAYERS = {
    "version": CORE,
    "templates": CORE,
    "losses": CORE,
    "authors_loss": CORE,
    "normalization": CORE,
    "class_statistics": CORE,
    "distribute": CORE,
    "callbacks": DRIVERS,
    "diagnostics": DRIVERS,
    # Compatibility shim of apps.evaluate (`python -m keras_interp.evaluate`).
    "evaluate": APPS,
}
DATA = "data"
FACADE = PACKAGE_NAME
# The layers that may import data/.
DATA_USERS = (EVALUATION, DRIVERS, APPS)

# Public constants that must have one definition (an assignment) in the
# package; everywhere else imports them.
SHARED_CONSTANTS = (
    "TOP_K",
    "CUB_EVAL_PARTS",
    "DEFAULT_BETA",
    "DEFAULT_CENTER",
    "CENTERS",
    "NEGATIVES_DIR",
    "MAPS",
    "LOSSES",
    "NORMALIZATIONS",
    "DEFAULT_NORMALIZATION",
)
# Arguments whose default is a named constant (`templates.DEFAULT_BETA`,
# `templates.DEFAULT_CENTER`, `normalization.DEFAULT_NORMALIZATION`; the
# authors' surrogate `authors_loss.AUTHORS_CENTER`), never a literal.
NAMED_DEFAULTS = ("beta", "center", "normalization")
# A module longer than this does more than one thing: split it by concept.
MAX_MODULE_LINES = 600
# A folder name with its constant, `data.NEGATIVES_DIR`.
NAMED_STRINGS = {"negatives": "NEGATIVES_DIR"}


def _module_files():
    """{module name: path} for every `.py` file of the package."""
    modules = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and d != "__pycache__"
        )
        for file in sorted(files):
            if not file.endswith(".py"):
                continue
            path = os.path.join(folder, file)
            parts = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES = _module_files()
PACKAGES = {
    name for name, path in MODULES.items() if path.endswith("__init__.py")
}


def _parse(name):
    with open(MODULES[name], encoding="utf-8") as f:
        return ast.parse(f.read(), filename=MODULES[name])


def _resolve(name, node):
    """The package module names an import node of module `name` reaches.

    `from a import b` reaches module `a.b` where that is a module, else
    `a` (a name defined in `a`). Relative imports are resolved against
    `name`'s package.
    """
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name if name in PACKAGES else name.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        targets = []
        for alias in node.names:
            child = f"{base}.{alias.name}"
            targets.append(child if child in MODULES else base)
    reached = set()
    for target in targets:
        if target != PACKAGE_NAME and not target.startswith(PACKAGE_NAME + "."):
            continue
        # `import a.b.c` of a name inside a module: the longest module prefix.
        while target not in MODULES and "." in target:
            target = target.rpartition(".")[0]
        reached.add(target)
    return reached


def _import_graph():
    """{module: {imported module: first line number}} over the package."""
    graph = {}
    for name in MODULES:
        edges = {}
        for node in ast.walk(_parse(name)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(name, node):
                    if target != name:
                        edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


GRAPH = _import_graph()


def _where(module, target):
    path = os.path.relpath(MODULES[module], ROOT)
    return f"{path}:{GRAPH[module][target]}: {module} -> {target}"


def _layer(module):
    """The layer number of a module, `DATA`, `FACADE`, or None (unplaced)."""
    if module == PACKAGE_NAME:
        return FACADE
    first = module.split(".")[1]
    if first == DATA:
        return DATA
    if first in PACKAGE_LAYERS:
        return PACKAGE_LAYERS[first]
    return MODULE_LAYERS.get(first)


def _cycles(graph):
    """The strongly connected components with more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):  # Tarjan's algorithm; the graph is small.
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _violation(module, target):
    """Why the import `module -> target` breaks the order, or None."""
    source, destination = _layer(module), _layer(target)
    if destination == FACADE:
        return "imports the package facade (import the defining module)"
    if source == FACADE:
        return "the facade imports apps/" if destination == APPS else None
    if source == DATA:
        if destination != DATA:
            return "data/ is a leaf: it imports nothing outside data/"
        return None
    if destination == DATA:
        if source not in DATA_USERS:
            return f"{LAYER_NAMES[source]} imports the leaf data/"
        return None
    if destination > source:
        return (
            f"{LAYER_NAMES[source]} imports the higher layer "
            f"{LAYER_NAMES[destination]}"
        )
    return None


def test_the_package_parses_and_has_modules():
    for layer in (CORE, LAYERS, MODELS, EVALUATION):
        assert any(_layer(m) == layer for m in MODULES), LAYER_NAMES[layer]
    # The graph sees function-local imports: the data package's lazy loader
    # aside, a module importing a sibling inside a function has its edge.
    assert GRAPH["keras_interp.models.builders"], "no edges parsed"


def test_every_module_is_placed_in_a_layer():
    unplaced = sorted(m for m in MODULES if _layer(m) is None)
    assert not unplaced, (
        "modules in no layer (place them in MODULE_LAYERS or a layered "
        f"package of tests/test_imports.py): {unplaced}"
    )


def test_imports_follow_the_layer_order():
    violations = [
        f"{_where(module, target)}: {why}"
        for module, edges in sorted(GRAPH.items())
        for target in sorted(edges)
        if _layer(module) is not None and _layer(target) is not None
        for why in [_violation(module, target)]
        if why
    ]
    assert not violations, "imports against the layer order:\n" + "\n".join(
        violations
    )


def test_only_apps_and_their_shims_import_apps():
    importers = sorted(
        _where(module, target)
        for module, edges in GRAPH.items()
        for target in edges
        if _layer(target) == APPS and _layer(module) != APPS
    )
    assert not importers, "apps/ imported from the library:\n" + "\n".join(
        importers
    )


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    report = []
    for component in cycles:
        members = set(component)
        report.append("cycle: " + ", ".join(component))
        report.extend(
            "  " + _where(module, target)
            for module in component
            for target in sorted(GRAPH[module])
            if target in members
        )
    assert not cycles, "import cycles:\n" + "\n".join(report)


def test_the_checks_catch_what_they_are_for():
    # The checker itself, on a made-up graph: an upward import, a cycle
    # through a function-local import, and data/ importing the core.
    assert _violation("keras_interp.losses", "keras_interp.layers.x")
    assert _violation("keras_interp.evaluation.x", "keras_interp.apps.y")
    assert _violation("keras_interp.data.cub", "keras_interp.templates")
    assert _violation("keras_interp.layers.x", "keras_interp.data.cub")
    assert _violation("keras_interp.callbacks", "keras_interp")
    assert _violation("keras_interp", "keras_interp.apps.x")
    assert not _violation("keras_interp.apps.x", "keras_interp.data.cub")
    assert not _violation("keras_interp.models.x", "keras_interp.templates")
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert _cycles(graph) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from . import templates\n")
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert _resolve("keras_interp.losses", node) == {"keras_interp.templates"}


def _assignments(name):
    """(line, constant) of each assignment to a shared constant in a module."""
    found = []
    for node in ast.walk(_parse(name)):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        else:
            continue
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name) and leaf.id in SHARED_CONSTANTS:
                    found.append((node.lineno, leaf.id))
    return found


@pytest.mark.parametrize("constant", SHARED_CONSTANTS)
def test_shared_constants_are_defined_once(constant):
    places = [
        f"{os.path.relpath(MODULES[module], ROOT)}:{line}"
        for module in sorted(MODULES)
        for line, name in _assignments(module)
        if name == constant
    ]
    assert len(places) <= 1, (
        f"{constant} is assigned in {len(places)} places (define it once and "
        f"import it): {places}"
    )


def test_modules_are_short():
    long = []
    for module, path in sorted(MODULES.items()):
        with open(path, encoding="utf-8") as f:
            lines = sum(1 for _ in f)
        if lines > MAX_MODULE_LINES:
            long.append(f"{os.path.relpath(path, ROOT)}: {lines} lines")
    assert not long, (
        f"modules over {MAX_MODULE_LINES} lines (split them by concept):\n"
        + "\n".join(long)
    )


def _tuple_value(node):
    """The value of a tuple or list of constants, else None."""
    if isinstance(node, (ast.Tuple, ast.List)) and len(node.elts) > 1:
        if all(isinstance(e, ast.Constant) for e in node.elts):
            return tuple(e.value for e in node.elts)
    return None


def test_shared_choice_tuples_are_not_copied():
    # A copy of `CENTERS`, `MAPS`, `LOSSES`, ... (e.g. a flag's `choices`)
    # would drift from the definition.
    definitions = {}
    for module in MODULES:
        for node in ast.walk(_parse(module)):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if (
                        isinstance(target, ast.Name)
                        and target.id in SHARED_CONSTANTS
                        and _tuple_value(node.value)
                    ):
                        definitions[_tuple_value(node.value)] = (
                            target.id,
                            (module, node.value.lineno, node.value.col_offset),
                        )
    assert definitions, "no choice tuple found"
    copies = []
    for module in sorted(MODULES):
        for node in ast.walk(_parse(module)):
            value = _tuple_value(node)
            if value not in definitions:
                continue
            if definitions[value][1] != (module, node.lineno, node.col_offset):
                path = os.path.relpath(MODULES[module], ROOT)
                copies.append(
                    f"{path}:{node.lineno}: {value} (use "
                    f"{definitions[value][0]})"
                )
    assert not copies, "copies of shared tuples:\n" + "\n".join(copies)


def _literal_defaults(name):
    """(line, argument, value) of literal defaults of `NAMED_DEFAULTS`.

    Function arguments, and class-level fields (dataclass configs).
    """
    found = []
    for node in ast.walk(_parse(name)):
        pairs = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs += zip(positional[-len(args.defaults) :], args.defaults)
            pairs += zip(args.kwonlyargs, args.kw_defaults)
            pairs = [(arg.arg, value) for arg, value in pairs if value]
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and item.value is not None:
                    if isinstance(item.target, ast.Name):
                        pairs.append((item.target.id, item.value))
        for arg, value in pairs:
            if arg in NAMED_DEFAULTS and isinstance(value, ast.Constant):
                if value.value is not None:
                    found.append((value.lineno, arg, value.value))
    return found


def test_defaults_are_named_constants():
    literals = [
        f"{os.path.relpath(MODULES[module], ROOT)}:{line}: {arg}={value!r}"
        for module in sorted(MODULES)
        for line, arg, value in _literal_defaults(module)
    ]
    assert not literals, (
        "literal defaults (use templates.DEFAULT_BETA, "
        "templates.DEFAULT_CENTER, normalization.DEFAULT_NORMALIZATION):\n"
        + "\n".join(literals)
    )


def _docstrings(tree):
    nodes = [tree] + [
        n
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    ]
    return {
        id(n.body[0].value)
        for n in nodes
        if n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }


def _keys(tree):
    """Dict keys and subscripts: a field named like a folder is not one."""
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys.update(id(key) for key in node.keys if key is not None)
        elif isinstance(node, ast.Subscript):
            keys.add(id(node.slice))
    return keys


def test_named_strings_are_written_once():
    places = collections.defaultdict(list)
    for module in sorted(MODULES):
        tree = _parse(module)
        docstrings = _docstrings(tree) | _keys(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and node.value in NAMED_STRINGS
                and id(node) not in docstrings
            ):
                path = os.path.relpath(MODULES[module], ROOT)
                places[node.value].append(f"{path}:{node.lineno}")
    repeated = {k: v for k, v in places.items() if len(v) > 1}
    assert not repeated, "\n".join(
        f"{value!r} written {len(where)} times (use {NAMED_STRINGS[value]}): "
        f"{where}"
        for value, where in repeated.items()
    )


def test_the_literal_checks_catch_what_they_are_for(tmp_path, monkeypatch):
    source = (
        "import dataclasses\n"
        "def f(x, beta=4.0, *, center='argmax', normalization=None):\n"
        "    return 'negatives'\n"
        "@dataclasses.dataclass\n"
        "class C:\n"
        "    center: str = 'centroid'\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, "keras_interp.probe", str(path))
    found = _literal_defaults("keras_interp.probe")
    tree = _parse("keras_interp.probe")
    strings = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and n.value == "negatives"
    ]
    assert len(strings) == 1 and id(strings[0]) not in _keys(tree)
    assert found == [
        (2, "beta", 4.0),
        (2, "center", "argmax"),
        (6, "center", "centroid"),
    ]
