"""Finding what the installed packages add to offrl: agents and environments, through entry points.

The core names an entry-point group, never a module: `offrl.agents` (modules that call register_agent) and
`offrl.envs` (modules that register dataset recipes, termination functions and behaviour trainers). offrl's
own agents/ and envs/ are found this way too (pyproject.toml declares them), exactly like a third party's
package, so the core imports neither and dependencies flow one way (agents/ and envs/ -> core).

Each entry point names a module; loading it imports the module, which registers what it holds. A group with
no entry point at all means a broken install (offrl's own entries are missing, e.g. an editable install made
before they were declared): that is one clear error, not an empty list of agents or datasets.
"""
from __future__ import annotations

from importlib.metadata import entry_points

from offrl.errors import OfflineRLError

AGENTS_GROUP = "offrl.agents"
ENVS_GROUP = "offrl.envs"

_loaded: set[str] = set()


def load(group: str) -> None:
    """Import every module that an entry point of `group` names, once per process."""
    if group in _loaded:
        return
    found = list(entry_points(group=group))
    if not found:
        raise OfflineRLError(f"no package declares the entry-point group {group!r}, so offrl finds none of its "
                             "own agents or environments: the install is broken or older than this code; "
                             "reinstall offrl (`pip install -e .` in the repository)")
    _loaded.add(group)  # before loading: a module that registers things may look them up while it loads
    for ep in found:
        try:
            ep.load()
        except Exception as exc:
            _loaded.discard(group)
            raise OfflineRLError(f"entry point {ep.name} ({ep.value}) of {group} failed to load: "
                                 f"{type(exc).__name__}: {exc}") from None


def load_agents() -> None:
    load(AGENTS_GROUP)


def load_envs() -> None:
    load(ENVS_GROUP)
