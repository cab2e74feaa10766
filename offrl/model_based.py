"""Soft actor-critic on model data: what MOPO, MOBILE and the model-based bases of other methods share.

OfflineRL-Kit trains its model-based agents the same way, and they differ only in where the model's
uncertainty enters: fit the dataset's dynamics ensemble once (offrl/dynamics.py, cached), then before update
1 and every `rollout_freq` updates roll dataset states out with the current stochastic policy in the
sampled model, and train SAC on batches of 5 % dataset rows and 95 % model rows (offrl/model_data.py).
`ModelBasedSAC` is that loop around `offrl.sac.SACAgent`; an agent subclasses it once and says where its
penalty goes:

    rollout_penalty()    (obs, action, model step) -> [S, N] subtracted from the stored model reward (MOPO)
    extend_batch(batch)  adds per-row quantities to the mixed batch before the losses see it (MOBILE's
                         penalty, computed on the raw states the model reads)
    td_target(batch)     from SACAgent, for penalties and clamps in the backup

`ModelBasedConfig` holds the settings OfflineRL-Kit's run_mopo.py and run_mobile.py share (they agree on
every SAC, buffer and model setting; only the penalty, the backup and MOBILE's 30-epoch fit cap differ),
so an agent's Config sets only what is its own. The model has no seed axis (it belongs to the data); its
weights live in the agent's state so that a resumed run needs no cache. The rollout's policy noise comes
from the agent's stream, the model's from the rollout buffer's, so seeds stay independent (design.md §4).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from offrl.config import NonNegativeFloat, PositiveFloat, PositiveInt, Seed, UnitFloat, Widths
from offrl.dynamics import DynamicsConfig, EnsembleDynamics, load_or_fit
from offrl.model_data import ModelRolloutBuffer, Penalty
from offrl.optim import cosine_annealing
from offrl.sac import SACAgent, SACConfig
from offrl.termination import termination_fn


@dataclass
class ModelBasedConfig(SACConfig):
    """OfflineRL-Kit's settings shared by run_mopo.py and run_mobile.py (argument names in brackets)."""
    actor_lr: PositiveFloat = 1e-4  # Adam lr of the actor, cosine-annealed over the run (--actor-lr)
    critic_lr: PositiveFloat = 3e-4  # Adam lr of the critics (--critic-lr)
    alpha_lr: PositiveFloat = 1e-4  # Adam lr of log α (--alpha-lr)
    hidden: Widths = (256, 256)  # hidden widths of actor and critics, ReLU (--hidden-dims)
    log_std_min: float = -5.0  # lower clamp of the actor's log σ (TanhDiagGaussian's sigma_min)
    alpha_max: PositiveFloat | None = 1.0  # α clamped to [0, 1] after every temperature step (SACPolicy, MOBILEPolicy)
    actor_first: bool = False  # critics, then actor and temperature (SACPolicy.learn's order)
    cosine_lr: bool = True  # cosine decay of the actor's lr to 0 over the run (CosineAnnealingLR over --epoch)
    rollout_length: PositiveInt = 1  # model steps per rollout (--rollout-length; per dataset in the agents)
    rollout_batch: PositiveInt = 50_000  # start states per rollout and seed (--rollout-batch-size)
    rollout_freq: PositiveInt = 1_000  # updates between rollouts (--rollout-freq)
    retain_rounds: PositiveInt = 5  # rollouts the model buffer keeps (--model-retain-epochs)
    real_ratio: UnitFloat = 0.05  # share of dataset rows in a batch, int(B · ratio) (--real-ratio)
    rollout_chunk: PositiveInt | None = 5_000  # start states rolled out at a time (None: all; see model_data)
    dynamics_hidden: Widths = (200, 200, 200, 200)  # model widths, Swish (--dynamics-hidden-dims)
    # L2 coefficient per model layer, one more than dynamics_hidden (--dynamics-weight-decay)
    dynamics_weight_decays: tuple[NonNegativeFloat, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    dynamics_max_epochs: PositiveInt | None = None  # cap on the model's epochs; None: patience only
    dynamics_seed: Seed = 0  # the model's own seed (shared by the agent's seeds, part of the cache key)


class ModelBasedSAC(SACAgent):
    """SACAgent whose every update starts with a rollout when one is due and trains on a mixed batch."""

    def __init__(self, spec, config: ModelBasedConfig, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        c = config
        # The shape comes from the config; prepare() loads the fitted weights and the dataset's family.
        self.dynamics = EnsembleDynamics(spec.obs_dim, spec.act_dim, self.dynamics_config()).requires_grad_(False)
        self.model_data = ModelRolloutBuffer(self.seeds, spec.obs_dim, spec.act_dim, rollout_batch=c.rollout_batch,
                                             rollout_length=c.rollout_length, rollout_freq=c.rollout_freq,
                                             retain_rounds=c.retain_rounds, real_ratio=c.real_ratio,
                                             chunk=c.rollout_chunk)

    def dynamics_config(self) -> DynamicsConfig:
        """The model's config: OfflineRL-Kit's with the agent's `dynamics_*` settings (equal settings, one fit)."""
        return DynamicsConfig.from_agent_config(self.config)

    def prepare(self, dataset, cache=None):
        super().prepare(dataset, cache)
        termination_fn(dataset.family)  # refuse a family without a termination function before fitting
        log = cache.log if cache is not None else (lambda msg: None)
        model = load_or_fit(dataset, self.dynamics_config(), cache=cache, log=log, device=self.log_alpha.device)
        self.dynamics.load_state_dict(model.state_dict())
        self.dynamics.family = dataset.family
        self.model_data.set_start_states(dataset.observations)

    # ---- where an agent puts its penalty ------------------------------------------------------------
    def rollout_penalty(self) -> Penalty | None:
        """Subtracted from the model's reward when a rollout stores it; None: no penalty (MBPO)."""
        return None

    def extend_batch(self, batch: dict) -> dict:
        """The mixed batch (raw states, `model_rows` marking the model rows) with what the losses need added."""
        return batch

    # ---- the update ---------------------------------------------------------------------------------
    @property
    def update_period(self) -> int:
        """Updates 1, 1 + P, 1 + 2P, ... roll out (`offrl bench` spreads a rollout's cost over P updates)."""
        return self.model_data.rollout_freq

    def rollout_policy(self, obs: torch.Tensor) -> torch.Tensor:
        """a ~ π(s) for raw states [S, N, d], noise from the agent's stream (OfflineRL-Kit rolls out stochastically)."""
        return self.sample(self.obs_norm(obs))[0]

    def update(self, batch, step):
        metrics = {}
        if self.model_data.due(step):
            metrics = self.model_data.rollout(self.dynamics, self.rollout_policy, self.rollout_penalty())
        batch = self.extend_batch(self.model_data.mix(batch))
        if self.config.cosine_lr:
            cosine_annealing(self.actor_opt, self.config.actor_lr, self.total_steps)
        return {**super().update(batch, step), **metrics}


__all__ = ["ModelBasedConfig", "ModelBasedSAC"]
