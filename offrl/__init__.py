"""offrl: an offline-RL benchmark suite. A registry of agents over one data layer, replay buffer, critics and
seed-batched training loop; `offrl run --agent td3bc --env pointmass-medium` trains one."""
import os

# OpenMP threads that spin while waiting for a peer thread descheduled by another process make torch's
# small matmuls 10-20x slower on a busy machine (measured on 2 cores with one other job: TD3+BC at 2 threads
# fell from ~42 to ~4 updates/s). Passive waiting costs little when the machine is idle. Set before torch
# loads; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
