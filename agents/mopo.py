"""MOPO — Yu, Thomas, Yu, Ermon, Zou, Levine, Finn & Ma, "MOPO: Model-based Offline Policy Optimization",
NeurIPS 2020, arXiv 2005.13239.

Train SAC on short rollouts of a learned dynamics ensemble, with the model's reward lowered where the
model is uncertain: a policy then gains nothing from leaving the data, where the model would be wrong.

    model reward:  r̃(s, a) = r̂(s, a) - λ · max_e ‖σ_e(s, a)‖₂     (all E members; σ_e over [s', r])
    rollouts:      every 1,000 updates, 50,000 dataset states per seed, H steps of π in the sampled model
    batches:       int(256 · 0.05) = 12 dataset rows + 244 model rows
    SAC:           y = r + γ (1 - d) (min_i Q'_i(s', a') - α log π(a'|s')),  a' ~ π(s')
                   L_Q = Σ_i mean (Q_i(s, a) - y)²,  L_π = mean α log π(ã|s) - min_i Q_i(s, ã)
                   L_α = -mean log α · (log π(ã|s) - |A|),  α clamped to ≤ 1

The loop (model fit, rollouts, mixing, cosine actor lr) is offrl/model_based.py, the losses offrl/sac.py;
this file is MOPO's penalty and settings. The penalty is OfflineRL-Kit's "aleatoric" mode, the maximum
over all 7 members (not only the elites) of the norm of the predicted standard deviation of next state and
reward together.

Defaults are OfflineRL-Kit's (`run_example/run_mopo.py`, `offlinerlkit/policy/model_free/sac.py`,
`policy_trainer/mb_policy_trainer.py`, `dynamics/ensemble_dynamics.py`), shared with MOBILE and listed on
`offrl.model_based.ModelBasedConfig`: 2×256 ReLU networks, two critics, actor lr 1e-4 cosine-annealed to 0
over the run, critic lr 3e-4, α lr 1e-4 from α = 1 with H̄ = -|A| and α clamped to [0, 1], γ 0.99, τ 5e-3,
log σ in [-5, 2], batch 256 with real ratio 0.05, rollouts of 50,000 states every 1,000 updates (the first
before update 1), a model buffer of 5 rollouts, the model of offrl/dynamics.py with OfflineRL-Kit's
settings and no cap on its epochs (the same cached fit as COCOA's stage A). Budget: 3,000 epochs × 1,000
updates. Without a dataset table entry: H = 1, λ = 2.5 (the script's argument defaults).

(H, λ) per dataset, from the docstring of run_mopo.py; `family_defaults` holds the medium column, so the
other levels need `--set`:

    |             | medium  | medium-replay | medium-expert |
    | halfcheetah | 5, 0.5  | 5, 0.5        | 5, 2.5        |
    | hopper      | 5, 5.0  | 5, 2.5        | 5, 5.0        |
    | walker2d    | 5, 0.5  | 1, 2.5        | 1, 2.5        |

Deviations: the actor's lr follows the cosine per update over the run's budget instead of per 1,000-update
epoch over 3,000 epochs (the same curve at that budget, without the steps); within an update the
temperature steps before the actor rather than after it (one Adam step of log α at lr 1e-4 apart); a
rollout's rows are stepped to the full length with a mask where OfflineRL-Kit drops terminated rows (the
same transitions are stored); the model picks an elite before drawing its noise (the same distribution);
offrl's default initialisation; random numbers from offrl's per-seed streams.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from offrl.config import NonNegativeFloat, PositiveInt
from offrl.model_based import ModelBasedConfig, ModelBasedSAC
from offrl.registry import register_agent


@dataclass
class Config(ModelBasedConfig):
    rollout_length: PositiveInt = 1  # H: model steps per rollout (run_mopo.py default; per family below)
    penalty_coef: NonNegativeFloat = 2.5  # λ: weight of the uncertainty penalty; 0 is MBPO (run_mopo.py default)


class MOPO(ModelBasedSAC):
    def rollout_penalty(self):
        return lambda obs, actions, step: self.config.penalty_coef * self.uncertainty(step)

    @staticmethod
    def uncertainty(step) -> torch.Tensor:
        """max_e ‖σ_e(s, a)‖₂ over all members, from a model step with every member's std: [..., B]."""
        return step.member_std.norm(dim=-1).amax(-2)

    @torch.no_grad()
    def penalty(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """λ · max_e ‖σ_e(s, a)‖₂ for raw states and actions [S, B, d]: [S, B]."""
        step = self.dynamics.step(obs, actions, deterministic=True)
        return self.config.penalty_coef * self.uncertainty(step)


# Per dataset family, from the table in the docstring (COCOA's model-based bases use them too).
FAMILY_DEFAULTS = {"halfcheetah": {"rollout_length": 5, "penalty_coef": 0.5},
                   "hopper": {"rollout_length": 5, "penalty_coef": 5.0},
                   "walker2d": {"rollout_length": 5, "penalty_coef": 0.5}}

register_agent("mopo", MOPO, Config, paper="Yu et al., NeurIPS 2020 (arXiv 2005.13239)",
               family="model-based, uncertainty-penalised reward", stages=("dynamics",),
               family_defaults=FAMILY_DEFAULTS)
