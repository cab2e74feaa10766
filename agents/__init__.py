"""Built-in agents: one file per algorithm, each ending in register_agent(...).

pyproject.toml declares this package in the entry-point group `offrl.agents`; importing it imports every
file here, so a new agent file is found without touching pyproject.toml or reinstalling.
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
