"""The shape of the package: no import cycle inside dacli (imports inside functions included), no
module that uses another module's private names, no file over 400 lines, and every file saying in its
first lines what it is for. Read from the source with ast, so nothing is imported."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dacli"
MAX_LINES = 400
COMPILED = {"dacli._snake"}  # the one compiled module: private to dacli.runtime.snake, which wraps it


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name):
    return MODULES[name].name == "__init__.py"


def imports(name):
    """(imported module, names taken from it) for every import statement of a module, at any depth."""
    tree = ast.parse(MODULES[name].read_text())
    base = name if is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("dacli"):
                    yield a.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = base
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                target = f"{pkg}.{node.module}" if node.module else pkg
            elif node.module and node.module.startswith("dacli"):
                target = node.module
            else:
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{target}.{n}" in MODULES or f"{target}.{n}" in COMPILED]
            for n in submodules:
                yield f"{target}.{n}", []
            rest = [n for n in names if n not in submodules]
            if rest:
                yield target, rest


def graph():
    return {m: sorted({t for t, _ in imports(m) if t in MODULES and t != m}) for m in MODULES}


def find_cycle(edges):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == "open":
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None

    for m in edges:
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_graph_is_read_right():
    edges = graph()
    assert "dacli.audio" in edges["dacli.codec"] and "dacli.legacy" in edges["dacli.codec"]
    assert "dacli.training.trainer" in edges["dacli.training.state"]
    assert "dacli.registry" in edges["dacli"]  # imported inside a function: still an edge
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a"]}) is None


def test_no_import_cycle():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_layers():
    """The model does not know the file format; the container and the audio module know no model."""
    edges = graph()
    model = [m for m in MODULES if m.startswith("dacli.model")]
    for m in model:
        assert not {"dacli.container", "dacli.codec", "dacli.legacy", "dacli.audio"} & set(edges[m]), m
    for m in ("dacli.container", "dacli.audio", "dacli.rates", "dacli.fileio", "dacli.batch", "dacli.outcome",
              "dacli.codes"):
        assert not [t for t in edges[m] if t.startswith(("dacli.model", "dacli.runtime", "dacli.codec"))], m
    assert not [m for m in MODULES if not m.startswith("dacli.training") and
                any(t.startswith("dacli.training") for t in edges[m])]  # the wheel leaves training out


def test_no_private_names_of_other_modules():
    offences = []
    for m in MODULES:
        tree = ast.parse(MODULES[m].read_text())
        aliases = {}
        for target, names in imports(m):
            offences += [f"{m}: from {target} import {n}" for n in names
                         if n.startswith("_") and not n.startswith("__") and target != m]
        for node in ast.walk(tree):  # module objects bound by "from . import x" or "import dacli.x as y"
            if isinstance(node, ast.ImportFrom):
                for a in node.names:
                    aliases[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and node.value.id in aliases
                    and any(t.endswith("." + aliases[node.value.id]) for t in MODULES)):
                offences.append(f"{m}: {node.value.id}.{node.attr}")
    assert not offences, offences


def test_files_are_small_and_say_what_they_are_for():
    for m, path in MODULES.items():
        text = path.read_text()
        assert len(text.splitlines()) <= MAX_LINES, f"{path}: {len(text.splitlines())} lines"
        doc = ast.get_docstring(ast.parse(text))
        assert doc and len(doc) > 20, f"{path}: no docstring saying what the file is for"


def test_one_thing_per_name():
    """No two classes of the package share a name, and only the model's encoder is called an Encoder
    (the window engine is the Packer, the file encoder the Tokenizer, the Ray actor the Worker), and
    the streamed form of it, the StreamEncoder."""
    classes = [(m, node.name) for m in MODULES for node in ast.walk(ast.parse(MODULES[m].read_text()))
               if isinstance(node, ast.ClassDef)]
    names = [n for _, n in classes]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert sorted((m, n) for m, n in classes if n.endswith("Encoder")) == [("dacli.model.dac", "Encoder"),
                                                                           ("dacli.stream", "StreamEncoder")]


def test_public_api_is_annotated():
    """Every parameter and the return of the public API carry a type (mypy checks them: make lint)."""
    import inspect

    from dacli import codec, codes, container, legacy, registry, windows
    from dacli.model import DAC
    api = [registry.load_model, registry.model_for_file, registry.models, registry.download, registry.locate,
           registry.bundled_versions, registry.cache_dir, DAC.encode, DAC.decode, DAC.kbps, DAC.n_codebooks_for_kbps,
           codec.encode_file, codec.decode_file, windows.encode_array, windows.decode_array, codec.describe_file,
           container.read, container.write, container.read_header, container.read_codes, container.describe,
           legacy.read, legacy.decode, legacy.decode_file, codec.plan_file, codec.model_input,
           codec.Tokenizer.__init__, codec.Tokenizer.submit, codec.Tokenizer.finish, windows.Packer.open,
           windows.Packer.feed, windows.Packer.add, windows.Packer.drop, windows.Packer.flush, windows.gap_frames,
           windows.masked, windows.plan, windows.decode_windows, codes.as_array, codes.as_tensor, codes.check]
    for f in api:
        sig = inspect.signature(f)
        missing = [n for n, p in sig.parameters.items() if n != "self" and p.annotation is inspect.Parameter.empty]
        assert not missing and sig.return_annotation is not inspect.Signature.empty, (f.__qualname__, missing)


def test_the_readme_slurm_line_is_the_one_slurm_check_runs():
    script = (PACKAGE.parent / "scripts" / "slurm-local.sh").read_text().splitlines()
    line = script[script.index("# README:") + 1].replace("\\$", "$")
    assert line.startswith("dacli encode") and line in (PACKAGE.parent / "README.md").read_text()
