"""Dependencies flow one way, and the core finds agents and environments through entry points.

The layers, read from the source with an AST walk (module-level and function-level imports, and
importlib.import_module("...") with a literal name, all count):
    core    offrl/ and offrl/data/: never imports agents/ or envs/
    agents  agents/, installed as offrl.agents: imports the core, never envs/ or offrl.cli
    envs    envs/, installed as offrl.envs: imports other envs/ modules and the core's LEAVES only
and no two modules import each other, directly or round a longer loop.

LEAVES are the core modules an environment package may build on: the registries it writes into (dataset
recipes and behaviour trainers, termination functions), the discovery that loads it, and small utilities
that own one thing each (errors, paths, atomic writes, the file lock, machine facts and CPU load, making Gymnasium envs,
reading Minari files). They know nothing of agents, training or runs, and import only one another (checked
here), so a change in the training machinery can neither break an environment nor be pulled in by one.

An import counts as an edge to the module it names. The package __init__ that Python runs first is not an
edge: envs/__init__.py imports its modules to register them, and every envs/ module importing a sibling
would otherwise close a loop through it.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from click.testing import CliRunner

from offrl import extensions
from offrl.errors import OfflineRLError

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the package it is installed as (pyproject.toml's package-dir).
PACKAGES = {"offrl": "offrl", "agents": "offrl.agents", "envs": "offrl.envs"}
LEAVES = {"offrl.errors", "offrl.paths", "offrl.atomic", "offrl.lock", "offrl.machine", "offrl.cpu_load",
          "offrl.gymenv", "offrl.extensions", "offrl.termination", "offrl.data.recipes", "offrl.data.minari_reader",
          "offrl.tasks"}


def module_files() -> dict[str, Path]:
    """Installed module name -> source file, for every module of the three folders."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def imported_names(module: str, path: Path) -> set[str]:
    """Every absolute name that `module`'s source imports, at any depth of the file: `import a.b` gives
    a.b, `from a import b` gives a.b (a module or a name defined in a)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    return names


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of the package it imports. `from offrl.data import recipes` is an edge to
    offrl.data.recipes (a module), `from offrl.rng import SeedStreams` one to offrl.rng (SeedStreams is not)."""
    graph = {}
    for module, path in files.items():
        edges = set()
        for name in imported_names(module, path):
            parent = name.rpartition(".")[0]
            if name in files:
                edges.add(name)
            elif parent in files:
                edges.add(parent)
        edges.discard(module)
        graph[module] = edges
    return graph


def layer(module: str) -> str:
    for package in ("offrl.agents", "offrl.envs"):
        if module == package or module.startswith(package + "."):
            return package.split(".")[1]
    return "core"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            a, b = layer(src), layer(dst)
            if a == "core" and b != "core":
                wrong.append(f"{src} -> {dst}: the core imports {b}/ (register it, or pass it in)")
            elif a == "agents" and (b == "envs" or dst == "offrl.cli"):
                wrong.append(f"{src} -> {dst}: an agent imports {'the CLI' if b == 'core' else 'envs/'}")
            elif a == "envs" and b == "core" and dst not in LEAVES:
                wrong.append(f"{src} -> {dst}: envs/ imports a core module that is not a leaf")
            elif src in LEAVES and b == "core" and dst not in LEAVES:
                wrong.append(f"{src} -> {dst}: a leaf imports a core module that is not a leaf")
            elif src in LEAVES and b != "core":
                wrong.append(f"{src} -> {dst}: a leaf imports {b}/")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v), on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# ---- the package itself
@pytest.fixture(scope="module")
def graph():
    return import_graph(module_files())


def test_the_walk_sees_the_three_folders_under_their_installed_names(graph):
    assert {"offrl.cli", "offrl.data.recipes", "offrl.agents.td3bc", "offrl.envs", "offrl.envs.mujoco"} <= set(graph)
    assert "offrl.agents.td3bc" in graph["offrl.agents.prdc"]  # agents/ import each other as offrl.agents.*
    assert "offrl.data.recipes" in graph["offrl.envs"]
    assert LEAVES <= set(graph), f"a leaf that does not exist: {LEAVES - set(graph)}"


def test_no_upward_imports(graph):
    wrong = upward_imports(graph)
    assert not wrong, "imports against the flow agents/ -> core <- envs/:\n" + "\n".join(wrong)


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "import loops (each line: modules that import one another):\n" + "\n".join(
        ", ".join(c) for c in found)


def test_the_checks_catch_what_they_are_for(tmp_path):
    """On a made-up package: every kind of wrong import is reported, and a loop through three modules."""
    src = {"offrl.dynamics": "def f():\n    from offrl.envs.termination import hopper\n",
           "offrl.agents.bad": "import importlib\nimportlib.import_module('offrl.envs.mujoco')\nimport offrl.cli\n",
           "offrl.envs.termination": "from offrl import trainer\n",
           "offrl.envs.mujoco": "", "offrl.cli": "", "offrl.trainer": "from offrl.data import resolve\n",
           "offrl.data.resolve": "from offrl.data import recipes\n",
           "offrl.data.recipes": "from offrl.data.resolve import resolve\n"}
    files = {}
    for module, text in src.items():
        files[module] = tmp_path / f"{module}.py"
        files[module].write_text(text)
    g = import_graph(files)
    assert [w.split(":")[0] for w in upward_imports(g)] == [
        "offrl.agents.bad -> offrl.cli", "offrl.agents.bad -> offrl.envs.mujoco",
        "offrl.data.recipes -> offrl.data.resolve", "offrl.dynamics -> offrl.envs.termination",
        "offrl.envs.termination -> offrl.trainer"]
    g["offrl.data.resolve"].add("offrl.trainer")
    assert cycles(g) == [["offrl.data.recipes", "offrl.data.resolve", "offrl.trainer"]]


# ---- discovery through entry points
def test_a_fresh_process_finds_agents_recipes_and_termination_functions_without_importing_them():
    code = ("import sys\nfrom offrl import registry\nfrom offrl.data import recipes\n"
            "from offrl.termination import termination_fn\n"
            "assert 'offrl.envs' not in sys.modules and 'offrl.agents' not in sys.modules\n"
            "termination_fn('hopper')\nassert recipes.split_name('pointmass-medium')\n"
            "assert callable(recipes.behaviour_trainer('hopper'))\n"
            "assert {'td3bc', 'csve'} <= {a.name for a in registry.all_agents()}\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr


def test_an_install_without_the_entry_points_is_one_clear_error(monkeypatch):
    from offrl.cli import main

    monkeypatch.setattr(extensions, "entry_points", lambda group: [])
    monkeypatch.setattr(extensions, "_loaded", set())
    out = CliRunner().invoke(main, ["agents"])
    assert out.exit_code == 2
    assert out.output.splitlines() == [
        "error: no package declares the entry-point group 'offrl.agents', so offrl finds none of its own agents "
        "or environments: the install is broken or older than this code; reinstall offrl (`pip install -e .` "
        "in the repository)"]


def test_an_entry_point_that_fails_to_load_is_named(monkeypatch):
    broken = EntryPoint(name="mine", value="offrl_no_such_module", group="offrl.envs")
    monkeypatch.setattr(extensions, "entry_points", lambda group: [broken])
    monkeypatch.setattr(extensions, "_loaded", set())
    with pytest.raises(OfflineRLError, match=r"entry point mine \(offrl_no_such_module\) of offrl.envs failed to "
                                             "load: ModuleNotFoundError"):
        extensions.load_envs()
    assert "offrl.envs" not in extensions._loaded  # a later call tries again
