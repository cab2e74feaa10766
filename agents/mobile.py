"""MOBILE — Sun, Zhang, Jia, Lin, Zhu & Yu, "Model-Bellman Inconsistency for Model-based Offline Reinforcement
Learning", ICML 2023 (PMLR 202).

Where the learned models disagree about the value of what follows (s, a), the Bellman target built from
them is unreliable. MOBILE measures that disagreement directly, as the spread over the elite models of the
target value of their predicted next states, and subtracts it from the model rows' targets.

    penalty:  u(s, a) = std_k [ mean_j min_i Q'_i(s″_kj, a″_kj) ],  s″_kj ~ N(μ_k(s, a), σ_k(s, a)),
              a″_kj ~ π(s″_kj); k over the 5 elites, j over 10 samples from each; std with Bessel's
              correction; u = 0 on the dataset rows of a batch
    critics:  y = max(0, r - β u(s, a) + γ (1 - d) min_i Q'_i(s', a')),  a' ~ π(s')   (deterministic backup)
              L_Q = Σ_i mean (Q_i(s, a) - y)²
    actor, α: as SAC (offrl/sac.py), α clamped to ≤ 1

The loop (model fit, rollouts, mixing, cosine actor lr) is offrl/model_based.py; the penalty is computed on
the mixed batch before the critic step, with the target critics and the policy as they are then (as
OfflineRL-Kit's `compute_lcb` at the top of `learn`), from the raw states the model reads.

The clamp y ≥ 0 (`clamp_target`) is in both official codes. It assumes returns are positive, as on the
D4RL locomotion tasks (Hopper's and Walker2d's alive bonus). Where rewards are negative (PointMass's
-distance, halfcheetah-random's frequent negative rewards, -1-per-step tasks) true values are below 0, so
the clamp pins those targets at 0: every action then looks equally good and the penalty, which only lowers
targets, vanishes wherever it would push a target below 0. Turn it off there (`--set clamp_target=false`;
the pointmass family default does).

Defaults are OfflineRL-Kit's (`run_example/run_mobile.py`, `offlinerlkit/policy/model_based/mobile.py`,
`dynamics/ensemble_dynamics.py` `sample_next_obss`), shared with MOPO and listed on
`offrl.model_based.ModelBasedConfig`: 2×256 networks, two critics, actor lr 1e-4 cosine-annealed, critic
lr 3e-4, α lr 1e-4 from α = 1, α clamped to [0, 1] after every temperature step (mobile.py), H̄ = -|A|,
γ 0.99, τ 5e-3, log σ in [-5, 2], 10 samples per elite, real ratio 0.05, rollouts of 50,000 states every
1,000 updates, 5 retained; the deterministic backup (run_mobile.py's default, as COCOA's MOBILE; the MOBILE
repository's configs/gym/default.py backs up with the entropy term: `--set deterministic_backup=false`);
the model fit capped at 30 epochs (run_mobile.py `--dynamics-max-epochs 30`, so its cache entry is not
MOPO's; the MOBILE repository has no cap: `--set dynamics_max_epochs=null`). Without a table entry: H = 1,
β = 1.5 (run_mobile.py's argument defaults). Budget: 3,000 epochs × 1,000 updates.

(H, β) per dataset, from the docstring of run_mobile.py; `family_defaults` holds the medium column:

    |             | random  | medium                      | medium-replay | medium-expert |
    | halfcheetah | 5, 0.5  | 5, 0.5                      | 5, 0.1        | 5, 2.0        |
    | hopper      | 5, 5.0  | 5, 1.5, fixed α = 0.2       | 5, 0.1        | 5, 1.5        |
    | walker2d    | 5, 2.0  | 5, 0.5                      | 1, 0.5        | 1, 1.5        |

hopper-medium's "auto-alpha=False" is followed as meant (α fixed at the script's --alpha 0.2); the script
parses that flag with type=bool, so on its command line `--auto-alpha False` would still learn α.

Deviations: as MOPO's (agents/mopo.py: per-update cosine, temperature before actor, masked fixed-length
rollouts, initialisation, per-seed streams); the samples' noise comes from the agent's stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from offrl.config import NonNegativeFloat, PositiveInt
from offrl.model_based import ModelBasedConfig, ModelBasedSAC
from offrl.registry import register_agent


@dataclass
class Config(ModelBasedConfig):
    rollout_length: PositiveInt = 1  # H: model steps per rollout (run_mobile.py default; per family below)
    penalty_coef: NonNegativeFloat = 1.5  # β: weight of the Bellman-inconsistency penalty (run_mobile.py default)
    num_samples: PositiveInt = 10  # next-state samples per elite in the penalty (--num-samples)
    deterministic_backup: bool = True  # leave -α log π out of the backup (run_mobile.py; MOBILE repo: False)
    clamp_target: bool = True  # y = max(0, y) as the official codes; wrong where returns are negative (docstring)
    dynamics_max_epochs: PositiveInt | None = 30  # run_mobile.py --dynamics-max-epochs 30 (MOBILE repo: None)


class MOBILE(ModelBasedSAC):
    def extend_batch(self, batch):
        penalty = self.bellman_penalty(batch["observations"], batch["actions"])
        return dict(batch, bellman_penalty=torch.where(batch["model_rows"], penalty, 0.0))

    @torch.no_grad()
    def bellman_penalty(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """u(s, a) for raw states and actions [S, B, d]: [S, B]."""
        c = self.config
        S, B, d = obs.shape
        next_obs = self.dynamics.elite_samples(obs, actions, c.num_samples, self.noise)  # [S, n, K, B, d]
        flat = self.obs_norm(next_obs.reshape(S, -1, d))
        next_actions, _ = self.sample(flat)
        q = self.critic.target(flat, next_actions).min(dim=1).values  # [S, n·K·B]
        return q.view(S, c.num_samples, -1, B).mean(1).std(1)

    def td_target(self, batch):
        y = super().td_target(batch) - self.config.penalty_coef * batch["bellman_penalty"]
        return y.clamp(min=0.0) if self.config.clamp_target else y

    def critic_loss(self, batch):
        loss, metrics = super().critic_loss(batch)
        model = batch["model_rows"].float()
        penalty = (batch["bellman_penalty"] * model).sum(-1) / model.sum(-1).clamp(min=1.0)
        return loss, {**metrics, "bellman_penalty": penalty}


# Per dataset family, from the table in the docstring (COCOA's model-based bases use them too).
FAMILY_DEFAULTS = {"halfcheetah": {"rollout_length": 5, "penalty_coef": 0.5},
                   "hopper": {"rollout_length": 5, "penalty_coef": 1.5, "auto_alpha": False,
                              "init_alpha": 0.2},
                   "walker2d": {"rollout_length": 5, "penalty_coef": 0.5},
                   "pointmass": {"clamp_target": False}}

register_agent("mobile", MOBILE, Config, paper="Sun et al., ICML 2023 (PMLR 202)",
               family="model-based, Bellman-inconsistency penalty", stages=("dynamics",),
               family_defaults=FAMILY_DEFAULTS)
