"""offrl: an offline-RL benchmark suite. A registry of agents over one data layer, replay buffer, critics and
seed-batched training loop; `offrl run --agent td3bc --env pointmass-medium` trains one."""
import os
import sys

# OpenMP's wait policy must be in the environment before torch loads libgomp: bounded spinning when the
# cores are free, passive waiting beside other jobs (offrl/cpu_load.py says why). A user's own setting wins;
# where torch is already loaded, the policy is already fixed and nothing is measured.
if "torch" not in sys.modules:
    from offrl.cpu_load import choose_wait_policy

    choose_wait_policy()

from offrl.version import __version__  # noqa: E402,F401


def __getattr__(name: str):
    """`offrl.train`, `offrl.load_policy` and `offrl.datasets` load on first use, so `import offrl` (and the CLI's
    start) stays light."""
    if name in ("train", "load_policy"):
        from offrl import api
        return getattr(api, name)
    if name == "datasets":
        import importlib
        return importlib.import_module("offrl.datasets")
    raise AttributeError(f"module 'offrl' has no attribute {name!r}")
