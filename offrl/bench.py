"""Speed: updates per second of an agent on a dataset, for several seed counts in one process.

Timing covers whole steps (batch sampling + update), after a warm-up, with a device synchronisation at the
end of the timed window. Speed is measured here, never in tests.
"""
from __future__ import annotations

import time

import torch

from offrl import config as cfg
from offrl import registry
from offrl.replay import TransitionBuffer
from offrl.trainer import resolve_family, set_threads


def updates_per_second(agent_name: str, dataset, num_seeds: int, steps: int = 200, warmup: int = 20,
                       device: torch.device | str = "cpu", overrides: dict | None = None,
                       threads: int = 0) -> float:
    """Steps per second of one process training `num_seeds` seeds (multiply by num_seeds for the aggregate).

    `threads` as in `offrl run` (0: one per seed, up to the cores)."""
    device = torch.device(device)
    set_threads(threads, num_seeds)
    info = registry.get(agent_name)
    config = cfg.resolve_config(info, resolve_family(dataset.name), overrides=overrides)
    seeds = list(range(num_seeds))
    agent = registry.make(agent_name, dataset.spec, config, seeds, device).to(device)
    agent.prepare(dataset, cache=None)
    buffer = TransitionBuffer(dataset, seeds, config.batch_size, device)
    for step in range(1, warmup + 1):
        agent.update(buffer.sample(), step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for step in range(warmup + 1, warmup + steps + 1):
        metrics = agent.update(buffer.sample(), step)
    for v in metrics.values():  # wait for the last update to finish
        v.cpu()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - t0)
