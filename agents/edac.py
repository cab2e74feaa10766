"""EDAC — An, Moon, Kim & Song, "Uncertainty-Based Offline Reinforcement Learning with Diversified
Q-Ensemble", NeurIPS 2021, arXiv 2110.01548.

SAC-N needs hundreds of critics on some datasets because its members' action gradients align: then the
min over the ensemble penalises out-of-data actions little. EDAC adds a term that pushes the members'
gradients with respect to the dataset action apart, so far fewer critics give the same penalty.

    critics: L_Q = Σ_i mean (Q_i(s, a) - y)² + η · mean_(s,a) 1/(N-1) Σ_{i≠j} ⟨g_i, g_j⟩,
             g_i = ∇_a Q_i(s, a) / (‖∇_a Q_i(s, a)‖ + 1e-10),  (s, a) from the dataset
    the rest as SAC-N (agents/sacn.py): target min over all N, actor min over all N, learned α.

The sum over ordered pairs divided by N − 1 (the official code's and CORL's normalisation) is N times the
mean pairwise cosine; it is computed as ‖Σ_i g_i‖² − Σ_i ‖g_i‖², which is O(N) instead of O(N²).

Defaults are CORL's (`tinkoff-ai/CORL` algorithms/offline/edac.py and configs/offline/edac/*.yaml), the same
as SAC-N's here: 3×256 networks, learning rates 3e-4, batch 256, γ 0.99, τ 5e-3, entropy backup, log σ in
[-5, 2], order temperature → actor → critics. (N, η) per family, from CORL's D4RL configs: halfcheetah
(10, 1.0), walker2d (10, 1.0), hopper (50, 1.0; OfflineRL-Kit's run_example/run_edac.py defaults, for
hopper-medium, agree). Medium-expert data takes η = 5.0 (CORL's halfcheetah-medium-expert; the table in
OfflineRL-Kit's run_edac.py docstring also for walker2d-medium-expert): `--set eta=5.0`, since the defaults
are per family, not per level. Elsewhere (N, η) = (10, 1.0), CORL's TrainConfig default. OfflineRL-Kit
differs in actor and α learning rates (1e-4) and clamps α to at most 1 (`--set alpha_max=1.0`).

Deviations: as SAC-N's (initialisation, one actor output layer, a shared policy sample, per-seed streams);
the diversity term runs its own forward pass of the critics on per-member copies of the dataset actions,
as the official code does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from offrl.config import NonNegativeFloat, PositiveInt
from offrl.registry import register_agent
from offrl.sac import SACAgent
from offrl.agents.sacn import Config as SACNConfig


@dataclass
class Config(SACNConfig):
    num_critics: PositiveInt = 10  # N (CORL's default; per-family values below)
    eta: NonNegativeFloat = 1.0  # η: weight of the gradient-diversity term (CORL's default)


class EDAC(SACAgent):
    def critic_loss(self, batch):
        loss, metrics = super().critic_loss(batch)
        diversity = self.gradient_diversity(batch["observations"], batch["actions"])
        return loss + self.config.eta * diversity, {**metrics, "diversity": diversity.detach()}

    def gradient_diversity(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """1/(N-1) Σ_{i≠j} cos(∇_a Q_i, ∇_a Q_j), averaged over the batch: [S]."""
        S, B, A = actions.shape
        N = self.config.num_critics
        member_actions = actions.unsqueeze(1).expand(S, N, B, A).clone().requires_grad_(True)
        q = self.critic(obs.unsqueeze(1).expand(S, N, B, obs.shape[-1]), member_actions)  # [S, N, B]
        grads, = torch.autograd.grad(q.sum(), member_actions, create_graph=True)  # [S, N, B, A]
        grads = grads / (grads.norm(dim=-1, keepdim=True) + 1e-10)
        pairs = grads.sum(1).pow(2).sum(-1) - grads.pow(2).sum((1, -1))  # Σ_{i≠j} ⟨g_i, g_j⟩: [S, B]
        return pairs.mean(-1) / max(N - 1, 1)


register_agent("edac", EDAC, Config, paper="An, Moon, Kim & Song, NeurIPS 2021 (arXiv 2110.01548)",
               family="model-free, ensemble uncertainty", base="sacn",
               family_defaults={"halfcheetah": {"num_critics": 10, "eta": 1.0},
                                "walker2d": {"num_critics": 10, "eta": 1.0},
                                "hopper": {"num_critics": 50, "eta": 1.0}})
