"""SAC from scratch — Haarnoja, Zhou, Abbeel & Levine, "Soft Actor-Critic Algorithms and Applications",
arXiv 1812.05905, in the form WSRL (Zhou et al., ICLR 2025, arXiv 2412.07762) fine-tunes with: the baseline
that shows what pre-training contributes. It trains online only, from randomly initialised networks.

    temperature: L_α = -mean log α · (log π(ã|s) + H̄),  H̄ = -|A|
    actor:       L_π = mean α log π(ã|s) - min_i Q_i(s, ã),  ã ~ π(s),  i over all 10 critics
    critics:     y = r + γ (1 - d) min_{i ∈ I} Q'_i(s', a'),  I = 2 of 10 drawn with replacement
                 L_Q = Σ_i mean (Q_i(s, a) - y)²

Defaults are WSRL's online SAC (`zhouzypaul/wsrl` experiments/configs/sac_config.py, ensemble_config.py and
the locomotion scripts): 2×256 networks with LayerNorm, 10 critics, subset 2 with replacement, no entropy term
in the backup, actor and α lr 1e-4, critic lr 3e-4, α starting at 1, 1,024 rows per env step in 4 critic
steps on disjoint quarters then one actor and temperature step, and the first 5,000 env steps collected by
the (untrained) policy before any update. `--set offline_ratio=0.5` mixes in dataset rows (WSRL's RLPD
baseline). Deviations: as WSRL's (initialisation, one actor output layer, per-seed streams). On the
pointmass toy, `family_defaults` use 32×32 networks, 4 critics and 256 rows per env step at UTD 2 (as WSRL's
toy sizes), so a toy run takes minutes on a CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from offrl.config import NonNegativeInt, PositiveFloat, PositiveInt, Widths
from offrl.online import OnlineConfig
from offrl.registry import register_agent
from offrl.sac import SACAgent, SACConfig


@dataclass
class Config(SACConfig, OnlineConfig):
    actor_lr: PositiveFloat = 1e-4  # Adam learning rate of the actor
    critic_lr: PositiveFloat = 3e-4  # Adam learning rate of the critics
    alpha_lr: PositiveFloat = 1e-4  # Adam learning rate of log α
    hidden: Widths = (256, 256)  # widths of actor and critics
    critic_layer_norm: bool = True  # LayerNorm in the critics
    actor_layer_norm: bool = True  # LayerNorm in the actor
    num_critics: PositiveInt = 10  # E
    target_reduction: Literal["min", "subset_min", "mean"] = "subset_min"  # min over a random subset
    target_subset: PositiveInt = 2  # its size
    subset_with_replacement: bool = True  # drawn with replacement
    deterministic_backup: bool = True  # no entropy term in the backup
    actor_first: bool = False  # critics, then temperature and actor
    utd: PositiveInt = 4  # critic steps per env step
    batch_size: PositiveInt = 1024  # rows drawn per env step (also online_batch_size)
    online_batch_size: PositiveInt = 1024  # rows per online update: 4 × 256
    warmup_steps: NonNegativeInt = 5_000  # env steps before the first update


class SAC(SACAgent):
    pass


register_agent("sac", SAC, Config, paper="Haarnoja et al. 2018 (arXiv 1812.05905), as WSRL fine-tunes",
               family="online, from scratch", phases=("online",),
               family_defaults={"pointmass": {"hidden": (32, 32), "num_critics": 4, "batch_size": 256,
                                              "online_batch_size": 256, "utd": 2}})
