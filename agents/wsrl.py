"""WSRL — Zhou, Peng, Li, Levine & Kumar, "Efficient Online Reinforcement Learning Fine-Tuning Need Not
Retain Offline Data", ICLR 2025, arXiv 2412.07762.

Pre-train offline with CQL (or Cal-QL) on a 10-critic LayerNorm ensemble; then drop the dataset. Online, first
collect a warm-up of 5,000 environment steps with the pre-trained policy (sampled actions, no updates), then
fine-tune with plain SAC on the online buffer alone: the warm-up re-calibrates Q on the online state
distribution, so the first updates do not collapse it and the policy does not un-learn.

    offline: Cal-QL's loss (agents/calql.py) with calql_bound off (CQL, WSRL's locomotion setting); the
             conservative term on 2 critics drawn per update, the TD loss on all 10
    online:  SAC (offrl/sac.py), no conservative term, no dataset rows:
             y = r + γ (1 - d) min_{i ∈ I} Q'_i(s', a'),  I = 2 of 10 drawn with replacement, a' ~ π(s')
             per env step: 4 critic steps on the quarters of one 1,024-row draw (each moving the targets),
             then one temperature and actor step on all 1,024 rows; the actor uses the min over all 10 critics
    switch:  actor, critics, targets, temperature and every Adam moment carry over unchanged.

Defaults (`zhouzypaul/wsrl` experiments/configs/{cql,sac,wsrl,ensemble}_config.py, the locomotion scripts and
finetune.py): 2×256 networks with LayerNorm in actor and critics, 10 critics, subset 2 with replacement, CQL
weight 5 with importance sampling and the max-target backup, no entropy term in the backup, actor and α lr
1e-4, critic lr 3e-4, α starting at 1, H̄ = -|A|, batch 256 offline and 1,024 with UTD 4 online, warm-up 5,000
(updates begin once more than max(warm-up, one batch) steps are collected), mask = 1 - terminated (a time limit
does not stop the bootstrap). `--set calql_bound=true` pre-trains with Cal-QL (WSRL's AntMaze/Kitchen/Adroit
setting); `--set warmup_steps=0` is the paper's no-warm-up ablation.

Deviations: offrl's initialisation (nn.Linear's, per seed) instead of orthogonal √2 with 1e-2 on the last
hidden layer; one actor output layer for mean and log σ; losses step one after another (temperature and
actor after the critics) rather than from one set of parameters; during the critic-only steps the actor's
Adam does not step (the JAX code steps it with zero gradients, which decays its moments); the max-target
backup stays on only offline (WSRL's locomotion SAC has none; AntMaze keeps it: `online_max_target_backup`);
no reward transform (locomotion's is the identity); noise from offrl's per-seed streams.

On the pointmass toy, `family_defaults` (TOY) use 32×32 networks, 4 critics, 4 candidate and backup actions
and online batches of 256 at UTD 2, so a toy run takes minutes on a CPU instead of about an hour.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from offrl.config import NonNegativeInt, PositiveInt, UnitFloat, Widths
from offrl.errors import OfflineRLError
from offrl.registry import register_agent
from offrl.agents.calql import CalQL, Config as CalQLConfig


@dataclass
class Config(CalQLConfig):
    hidden: Widths = (256, 256)  # critic widths (locomotion 2×256)
    actor_hidden: Widths | None = (256, 256)  # actor widths
    critic_layer_norm: bool = True  # LayerNorm in the critics (use_redq)
    actor_layer_norm: bool = True  # LayerNorm in the actor
    num_critics: PositiveInt = 10  # E
    target_reduction: Literal["min", "subset_min", "mean"] = "subset_min"  # min over a random subset
    target_subset: PositiveInt = 2  # its size
    subset_with_replacement: bool = True  # drawn with replacement (jax.random.randint)
    cql_members: PositiveInt | None = 2  # critics that get the conservative term offline
    calql_bound: bool = False  # CQL pre-training (locomotion); True: Cal-QL
    actor_first: bool = False  # critics, then temperature and actor
    offline_ratio: UnitFloat = 0.0  # no offline data online
    online_batch_size: PositiveInt = 1024  # 4 × 256
    online_utd: PositiveInt = 4  # critic steps per env step, on disjoint quarters of the batch
    online_max_target_backup: bool = False  # keep the max-target backup online (AntMaze)
    warmup_steps: NonNegativeInt = 5_000  # env steps by the pre-trained policy before the first update


# The toy task's sizes: with the paper's networks a pointmass run of 5,000 updates and 20,000 env steps takes
# close to an hour on a shared CPU; these keep it within minutes (the method, warm-up and budgets unchanged).
TOY = {"hidden": (32, 32), "actor_hidden": (32, 32), "num_critics": 4, "n_actions": 4, "max_target_actions": 4,
       "online_batch_size": 256, "online_utd": 2}


class WSRL(CalQL):
    extras = ("mc_return",)  # read offline only with calql_bound
    online_extras = ()  # online it is SAC: rows go to the buffer every step, without returns

    def __init__(self, spec, config: Config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        if config.online_batch_size % config.online_utd:
            raise OfflineRLError(f"online_utd must divide online_batch_size ({config.online_batch_size}), "
                                 f"got {config.online_utd}")

    def set_phase(self, phase: str) -> None:
        if phase == "online":  # SAC on the online buffer: no conservative term, high UTD
            c = self.config
            self.conservative = False
            self.config = dataclasses.replace(c, utd=c.online_utd, max_target_backup=c.online_max_target_backup)


register_agent("wsrl", WSRL, Config, paper="Zhou, Peng, Li, Levine & Kumar, ICLR 2025 (arXiv 2412.07762)",
               family="offline-to-online, no data retention", base="calql", phases=("offline", "online"),
               family_defaults={"pointmass": TOY})
