"""SAC-N — An, Moon, Kim & Song, "Uncertainty-Based Offline Reinforcement Learning with Diversified
Q-Ensemble", NeurIPS 2021, arXiv 2110.01548 (the paper's first method; EDAC is its second).

Soft actor-critic with N critics instead of two, and no other change: the min over a large ensemble is a
lower confidence bound on Q that penalises actions the data does not cover, where the members disagree.

    temperature: L_α = -mean log α · (log π(ã|s) + H̄),  H̄ = -|A|
    actor:       L_π = mean α log π(ã|s) - min_i Q_i(s, ã),  ã ~ π(s)
    critics:     y = r + γ (1 - d) (min_i Q'_i(s', a') - α log π(a'|s')),  a' ~ π(s')
                 L_Q = Σ_i mean (Q_i(s, a) - y)²,  i = 1 .. N

The losses live in offrl/sac.py; this file holds SAC-N's settings. Defaults are CORL's
(`tinkoff-ai/CORL` algorithms/offline/sac_n.py and configs/offline/sac_n/*.yaml): 3×256 networks, actor,
critic and α learning rates 3e-4, batch 256, γ 0.99, τ 5e-3, log α starting at 0, H̄ = -|A|, the entropy
term in the backup, log σ clamped to [-5, 2] ("clipping params from EDAC paper"), no state normalisation,
and the order temperature → actor → critics within an update (CORL: "EDAC paper uses reverse"). N per
family, from CORL's D4RL configs: halfcheetah 10 (medium-replay, medium-expert), walker2d 20 (medium,
medium-expert), hopper 500 (hopper-medium; CORL's hopper-medium-replay uses 200: `--set num_critics=200`).
Elsewhere N = 10. Budget: 3,000 epochs × 1,000 updates.

Deviations: offrl's default initialisation (nn.Linear's, per seed) instead of the EDAC code's (hidden
biases 0.1, output layers U(±3e-3) for the critics and U(±1e-3) for the actor's heads); the actor's mean and
log σ come from one output layer of width 2|A| instead of two; the temperature and actor steps share one
policy sample (CORL draws a second, from the same distribution); noise from offrl's per-seed streams.
"""
from __future__ import annotations

from dataclasses import dataclass

from offrl.config import PositiveFloat, PositiveInt, Widths
from offrl.registry import register_agent
from offrl.sac import SACAgent, SACConfig


@dataclass
class Config(SACConfig):
    actor_lr: PositiveFloat = 3e-4  # Adam learning rate of the actor (CORL)
    critic_lr: PositiveFloat = 3e-4  # Adam learning rate of the critic ensemble (CORL)
    alpha_lr: PositiveFloat = 3e-4  # Adam learning rate of log α (CORL)
    hidden: Widths = (256, 256, 256)  # hidden layer widths of actor and critics (CORL, EDAC paper)
    num_critics: PositiveInt = 10  # N (CORL's default; per-family values below)
    log_std_min: float = -5.0  # lower clamp of log σ (EDAC paper, CORL)
    log_std_max: float = 2.0  # upper clamp of log σ


class SACN(SACAgent):
    pass


register_agent("sacn", SACN, Config, paper="An, Moon, Kim & Song, NeurIPS 2021 (arXiv 2110.01548)",
               family="model-free, ensemble uncertainty",
               family_defaults={"halfcheetah": {"num_critics": 10},
                                "walker2d": {"num_critics": 20},
                                "hopper": {"num_critics": 500}})
