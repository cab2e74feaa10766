"""The agent registry: agents register themselves by name; the CLI and the trainer look them up.

Where agents come from: the modules named by the entry-point group `offrl.agents` (offrl/extensions.py),
which holds the built-in agents/ (installed as offrl.agents; pyproject.toml declares it) and any installed
plugin package, and files given with `offrl run --plugin my_agent.py`. The registry names the group, not a
module, so the core never imports agents/. Registering a name twice with a different class is an error.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from offrl import extensions
from offrl.errors import OfflineRLError


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
    # The training phases, in order: ("offline",), ("offline", "online") (pre-training, then fine-tuning in
    # the environment; its Config inherits offrl.online.OnlineConfig) or ("online",) (from scratch).
    phases: tuple[str, ...] = ("offline",)

    @property
    def offline(self) -> bool:
        return "offline" in self.phases

    @property
    def online(self) -> bool:
        return "online" in self.phases


_AGENTS: dict[str, AgentInfo] = {}


@dataclass
class AgentVariants:
    """One name for a family of registered agents told apart by one config key: `offrl run --agent cocoa --set
    base=cql` runs the agent registered as `cocoa-cql`. The name is resolved before a run starts, so run.yaml,
    results rows and tables carry the concrete agent's name."""
    name: str
    key: str  # the config key that picks the variant ("base")
    variants: dict[str, str]  # value of `key` -> registered agent name
    default: str  # the value of `key` when neither --set nor a config file gives one
    paper: str = ""
    family: str = ""
    stages: tuple[str, ...] = ()


_VARIANTS: dict[str, AgentVariants] = {}


def register_agent(name: str, agent_cls: type, config_cls: type, *, paper: str = "", family: str = "",
                   base: str | None = None, stages=(), family_defaults=None, phases=("offline",)) -> AgentInfo:
    """Make an agent available as `offrl run --agent NAME`."""
    phases = tuple(phases)
    if phases not in (("offline",), ("offline", "online"), ("online",)):
        raise OfflineRLError(f"agent {name!r}: phases must be ('offline',), ('offline', 'online') or ('online',), "
                             f"got {phases!r}")
    info = AgentInfo(name, agent_cls, config_cls, paper, family, base, tuple(stages),
                     agent_cls.__module__, dict(family_defaults or {}), phases)
    old = _AGENTS.get(name)
    if old is not None and old.agent_cls.__qualname__ != agent_cls.__qualname__:
        raise OfflineRLError(f"agent name {name!r} is registered twice ({old.module} and {info.module})")
    _AGENTS[name] = info
    return info


def register_variants(name: str, key: str, variants: dict[str, str], default: str, *, paper: str = "",
                      family: str = "", stages=()) -> AgentVariants:
    """Make NAME stand for the registered agent `variants[value of key]` (see AgentVariants)."""
    if default not in variants:
        raise OfflineRLError(f"agent {name!r}: default {key} {default!r} is not one of {sorted(variants)}")
    _VARIANTS[name] = AgentVariants(name, key, dict(variants), default, paper, family, tuple(stages))
    return _VARIANTS[name]


def resolve_variant(name: str, overrides: dict | None = None, file_values=None) -> str:
    """The registered agent NAME stands for: NAME itself, or for a variant family the agent its key picks
    (from `overrides`, then `file_values` (a YAML config file's mapping, or a function that reads it, called
    only for a family), else its default)."""
    discover()
    group = _VARIANTS.get(name)
    if group is None:
        return name
    if callable(file_values):
        file_values = file_values()
    for values in (overrides or {}, file_values or {}):
        if group.key in values:
            value = values[group.key]
            if value not in group.variants:
                raise OfflineRLError(f"agent {name}: {group.key} must be one of {', '.join(group.variants)}, "
                                     f"got {value!r}")
            return group.variants[value]
    return group.variants[group.default]


def all_variants() -> list[AgentVariants]:
    discover()
    return [_VARIANTS[k] for k in sorted(_VARIANTS)]


def discover() -> None:
    """Import the agents the install declares (built-in and plugin packages) once."""
    extensions.load_agents()


def load_plugin(path: str | Path) -> None:
    """Import a Python file that calls register_agent(). Whatever goes wrong while it imports (an exception,
    sys.exit) is one OfflineRLError naming the file, and the half-imported module is forgotten."""
    path = Path(path)
    if not path.is_file():
        raise OfflineRLError(f"plugin file {path} does not exist" if not path.exists() else
                             f"plugin {path} is not a file")
    name = f"offrl_plugin_{path.stem}"
    # An explicit source loader: spec_from_file_location finds no loader for a name without ".py".
    spec = importlib.util.spec_from_loader(name, importlib.machinery.SourceFileLoader(name, str(path)))
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:
        sys.modules.pop(name, None)
        raise OfflineRLError(f"plugin {path} called sys.exit({exc.code!r}) while it was imported") from None
    except Exception as exc:
        sys.modules.pop(name, None)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise OfflineRLError(f"plugin {path} failed to import: {type(exc).__name__}: {first}") from None


def get(name: str) -> AgentInfo:
    """The agent registered as `name`; a variant family's name gives its default variant."""
    discover()
    if name in _VARIANTS:
        name = resolve_variant(name)
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
