"""`offrl.datasets.load(name)`: the Dataset a name stands for, as `offrl run --env NAME` resolves it (a local
D4RL file, a local Minari dataset, or the suite's generated dataset, built on first use)."""
from __future__ import annotations

from offrl.data import Dataset, resolve


def load(name: str, size: int | None = None, quiet: bool = False) -> Dataset:
    """The dataset `name` (e.g. "hopper-medium", "minari:mujoco/hopper/medium-v0", "d4rl:hopper-medium-v2");
    `size`: transitions of a generated dataset."""
    return resolve(name, size=size, log=(lambda message: None) if quiet else print)


__all__ = ["load", "Dataset"]
