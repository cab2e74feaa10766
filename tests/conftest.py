"""Shared fixtures: small generated datasets in a private data folder, and one torch thread per test process
(the suite must be quick and repeatable on a 2-core machine)."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (offrl sets it too, but later)

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory):
    """A private OFFRL_DATA_DIR for the whole session: tests never touch the user's ~/.offrl."""
    path = tmp_path_factory.mktemp("offrl_data")
    mp = pytest.MonkeyPatch()
    mp.setenv("OFFRL_DATA_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def pointmass(data_dir):
    """pointmass(level, size=20_000) -> Dataset, built once per session."""
    from offrl.data import resolve

    cache = {}

    def get(level: str = "medium", size: int = 20_000):
        key = (level, size)
        if key not in cache:
            cache[key] = resolve(f"offrl:pointmass-{level}", size=size, log=lambda msg: None)
        return cache[key]
    return get


def evaluate_policy(agent, dataset, episodes: int = 20) -> np.ndarray:
    """Mean normalised score per seed of `agent` on `dataset`'s env, over fixed evaluation episodes."""
    from offrl.evaluation import Evaluator

    ev = Evaluator(dataset, agent.num_seeds, episodes)
    try:
        return dataset.normalized_score(ev.run(agent).mean(1))
    finally:
        ev.close()


def train_agent(name: str, dataset, steps: int, seeds=(0,), compile_mode: str = "eager", **overrides):
    """Build agent `name` (Config defaults + overrides) through the runs' builder, prepare it on `dataset`,
    and run `steps` updates (in `compile_mode`, see offrl/compile.py)."""
    from offrl import config as cfg
    from offrl import registry
    from offrl.build import build_run

    config = cfg.apply(registry.get(name).config_cls(), overrides)
    # OFFRL_TEST_DEVICE=cuda trains on a GPU (scripts/gpu_check.sh); the suite's default is the CPU.
    device = os.environ.get("OFFRL_TEST_DEVICE", "cpu")
    parts = build_run(name, dataset, config, list(seeds), device, compile_mode, total_steps=steps)
    for step in range(1, steps + 1):
        parts.train_step(step)
    return parts.agent
