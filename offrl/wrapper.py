"""Policy wrappers: agents that act by correcting another agent's trained policy, seed by seed.

A wrapper (CDSA is one) does not retrain a policy. It holds a base agent's trained policy for each of its
seeds, trains only its own parts in update(), and acts as `correct(obs, base action)`. The base comes from
the config's `base_run`, a finished run folder: seed k's modules load into a one-seed agent of that run's
type (offrl/seed_state.py), so each seed of the wrapper wraps the policy of the same seed. With no
`base_run`, prepare() trains `base_agent` for `base_steps` updates through the runs' builder (offrl/build.py)
with the wrapper's seeds, which is the policy a run of that agent with those seeds and steps trains; the
trainer's cache keeps it, so a resumed run does not train it again.

The base's modules are the wrapper's modules, frozen and outside its optimisers: checkpoints hold them,
and a finished wrapper run is evaluated without its base folder. A wrapper is a normal agent to the rest
of the suite (rows, evaluation, checkpoints, `--resume`); its update may train nothing at all.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from offrl import registry
from offrl.agent import Agent
from offrl.errors import OfflineRLError

BASE_STAGE = "base-policy"  # the cache's stage name of a base trained by the wrapper


class PolicyWrapper(Agent):
    """Subclasses set up their own networks in __init__, train them in update(), and define correct().
    Their Config has `base_run: str`, `base_agent: str` and `base_steps: int`."""

    def __init__(self, spec, config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        self.base: nn.Module | None = None  # built by prepare(); its act is the policy being corrected

    def prepare(self, dataset, cache=None) -> None:
        if self.base is None:
            base = self.load_base(dataset) if self.config.base_run else self.train_base(dataset, cache)
            self.base = base.to(self.noise.keys.device).requires_grad_(False)

    def load_base(self, dataset) -> nn.Module:
        """One one-seed agent per seed, each holding that seed's modules from the run in `base_run`."""
        from offrl.seed_state import seed_agent

        run_dir = Path(self.config.base_run)
        if not (run_dir / "run.yaml").is_file():
            raise OfflineRLError(f"base_run {run_dir} is not a run folder (no run.yaml)")
        if not (run_dir / "result.json").is_file():
            raise OfflineRLError(f"base_run {run_dir} has not finished (no result.json): finish it first "
                                 f"(offrl run --resume {run_dir})")
        return nn.ModuleList(seed_agent(run_dir, seed, dataset) for seed in self.seeds)

    def train_base(self, dataset, cache=None) -> nn.Module:
        """`base_agent` trained for `base_steps` updates on `dataset` with this wrapper's seeds."""
        from offrl import config as cfg
        from offrl.build import agent_config, build_run

        name, steps = self.config.base_agent, self.config.base_steps
        info = registry.get(name)
        if issubclass(info.agent_cls, PolicyWrapper):
            raise OfflineRLError(f"base_agent {name} is itself a policy wrapper: name the agent whose policy "
                                 "is wrapped")
        base_cfg = agent_config(name, dataset)
        device = self.noise.keys.device

        def build():
            parts = build_run(name, dataset, base_cfg, self.seeds, device, "auto", total_steps=steps,
                              log=lambda message: None)
            for step in range(1, steps + 1):
                parts.train_step(step)
            return {k: v.detach().cpu() for k, v in parts.agent.state_dict().items()}

        key = {"agent": name, "config": cfg.to_dict(base_cfg), "steps": steps, "seeds": list(self.seeds)}
        state = cache.get_or_build(dataset, BASE_STAGE, key, self.seeds[0], build) if cache else build()
        from offrl.build import make_agent

        base = make_agent(name, dataset, base_cfg, self.seeds, device)
        base.prepare(dataset)
        base.load_state_dict(state)
        return base

    @torch.no_grad()
    def base_act(self, obs: torch.Tensor) -> torch.Tensor:
        """The base policy's deterministic actions for observations [S, N, obs_dim]: seed i's own policy."""
        if isinstance(self.base, nn.ModuleList):
            return torch.cat([member.act(obs[i:i + 1], True) for i, member in enumerate(self.base)])
        return self.base.act(obs, True)

    def correct(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The action taken for `obs` instead of the base's `action` (both with a leading seed axis)."""
        raise NotImplementedError

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.correct(obs, self.base_act(obs))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.base is not None:
            self.base.eval()  # the base is a finished policy: its dropout or batch statistics never train
        return self
