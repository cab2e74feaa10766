"""offrl from Python: train an agent, load one seed's trained policy, load a dataset.

What a notebook needs without shelling out to the CLI. `train` is `offrl run` (the same run folder, rows and
results table); `load_policy` turns seed k of a run folder into an object whose `predict` takes a numpy batch
of raw observations, with everything the agent applies to them (normalisers, models, wrappers) inside it, as
its checkpoint holds them. A run folder is data: its checkpoint loads weights-only and the plugin files its
run.yaml names are imported only when `trust_plugins=True`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class TrainedRun:
    run_dir: Path  # the run folder (run.yaml, checkpoint.pt, eval.csv, result.json)
    rows: list[dict] = field(default_factory=list)  # one results row per seed, as appended to the table

    @property
    def final_scores(self) -> dict[int, float]:
        """Normalised score of each seed's last evaluation."""
        return {row["seed"]: row["final_score"] for row in self.rows}


def train(agent: str, dataset: str, seeds=(0,), steps: int | None = None, *, eval_every: int | None = None,
          eval_episodes: int | None = None, out: str | Path = "runs", name: str | None = None,
          results: str | Path | None = None, dataset_size: int | None = None, device: str = "auto",
          threads: int = 0, plugins=(), quiet: bool = True, **overrides) -> TrainedRun:
    """Train `agent` on `dataset` for `steps` updates per seed, as `offrl run` does; keyword arguments not named
    here are the agent's config overrides (`actor_lr=1e-4`, `hidden=[64, 64]`)."""
    from offrl.trainer import TrainConfig, Trainer

    train_cfg = TrainConfig()
    for key, value in dict(steps=steps, eval_every=eval_every, eval_episodes=eval_episodes).items():
        if value is not None:
            setattr(train_cfg, key, value)
    log = (lambda message: None) if quiet else print
    trainer = Trainer.start(agent, dataset, list(seeds), out_dir=str(out), train=train_cfg, overrides=overrides,
                            device=device, dataset_size=dataset_size, results=str(results) if results else None,
                            plugins=plugins, run_name=name, threads=threads, log=log)
    return TrainedRun(trainer.run_dir, trainer.fit() or [])


class Policy:
    """Seed `seed`'s policy of a finished (or checkpointed) run: `predict(obs)` on raw observations."""

    def __init__(self, agent, seed: int, device: torch.device):
        self.agent, self.seed, self.device = agent, seed, device

    @torch.no_grad()
    def predict(self, obs, deterministic: bool = True) -> np.ndarray:
        """Actions for observations [N, obs_dim] (or one [obs_dim]), as a float32 numpy array."""
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == 1
        batch = torch.as_tensor(obs.reshape(1, -1, obs.shape[-1]), device=self.device)  # [S=1, N, d]
        actions = self.agent.act(batch, deterministic=deterministic)[0].cpu().numpy()
        return actions[0] if single else actions


def load_policy(run_dir: str | Path, seed: int = 0, device: str = "cpu", plugins=(), trust_plugins: bool = False) -> Policy:
    """Seed `seed` of the run in `run_dir`, ready to act (on `device`). A run of a plugin agent needs its file
    again in `plugins`, or `trust_plugins=True`."""
    from offrl.build import load_plugins
    from offrl.data import resolve
    from offrl.machine import pick_device
    from offrl.run_folder import RunFolder, plugins_to_import
    from offrl.seed_state import seed_agent

    folder = RunFolder(run_dir)
    spec = folder.read_spec()
    load_plugins(plugins_to_import(spec, folder.path, plugins, trust_plugins))
    dev = pick_device(device)
    dataset = resolve(spec.dataset, size=spec.dataset_size, log=lambda message: None)
    agent = seed_agent(run_dir, seed, dataset, dev)
    agent.eval()
    return Policy(agent, seed, dev)


__all__ = ["train", "load_policy", "TrainedRun", "Policy"]
