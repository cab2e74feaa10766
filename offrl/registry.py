"""The agent registry: agents register themselves by name; the CLI and the trainer look them up.

Where agents come from, in order: the built-in files in agents/ (installed as offrl.agents), packages that
declare the entry-point group `offrl.agents` (each entry point names a module to import), and files given
with `offrl run --plugin my_agent.py`. Registering a name twice with a different class is an error.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from offrl.errors import OfflineRLError

ENTRY_POINT_GROUP = "offrl.agents"


@dataclass
class AgentInfo:
    name: str
    agent_cls: type
    config_cls: type
    paper: str = ""
    family: str = ""
    base: str | None = None
    stages: tuple[str, ...] = ()  # pre-training stages run by prepare(), e.g. ("dynamics",)
    module: str = ""
    # Per-dataset-family overrides of the Config defaults, as the paper tunes them: {"halfcheetah": {...}}.
    family_defaults: dict = field(default_factory=dict)


_AGENTS: dict[str, AgentInfo] = {}
_discovered = False


def register_agent(name: str, agent_cls: type, config_cls: type, *, paper: str = "", family: str = "",
                   base: str | None = None, stages=(), family_defaults=None) -> AgentInfo:
    """Make an agent available as `offrl run --agent NAME`."""
    info = AgentInfo(name, agent_cls, config_cls, paper, family, base, tuple(stages),
                     agent_cls.__module__, dict(family_defaults or {}))
    old = _AGENTS.get(name)
    if old is not None and old.agent_cls.__qualname__ != agent_cls.__qualname__:
        raise OfflineRLError(f"agent name {name!r} is registered twice ({old.module} and {info.module})")
    _AGENTS[name] = info
    return info


def discover() -> None:
    """Import built-in agents and entry-point plugins once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import offrl.agents as builtin
    for mod in pkgutil.iter_modules(builtin.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"offrl.agents.{mod.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:
            raise OfflineRLError(f"plugin entry point {ep.name} ({ep.value}) failed to load: "
                                 f"{type(exc).__name__}: {exc}") from None


def load_plugin(path: str | Path) -> None:
    """Import a Python file that calls register_agent()."""
    path = Path(path)
    if not path.is_file():
        raise OfflineRLError(f"plugin file {path} does not exist")
    name = f"offrl_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise OfflineRLError(f"plugin {path} failed to import: {type(exc).__name__}: {exc}") from None


def get(name: str) -> AgentInfo:
    discover()
    if name not in _AGENTS:
        raise OfflineRLError(f"unknown agent {name!r}; registered: {', '.join(sorted(_AGENTS))}")
    return _AGENTS[name]


def all_agents() -> list[AgentInfo]:
    discover()
    return [_AGENTS[k] for k in sorted(_AGENTS)]


def make(name: str, spec, config, seeds, device):
    """Build agent `name` for a dataset spec; `config` is its resolved Config instance."""
    info = get(name)
    return info.agent_cls(spec, config, list(seeds), device)
