"""PRDC — Ran, Li, Zhang, Yu, "Policy Regularization with Dataset Constraint for Offline Reinforcement
Learning", ICML 2023, arXiv 2306.06569.

TD3+BC whose behaviour-cloning target is not the dataset action of the same state but the action of the
nearest dataset point in the joint space (β·ŝ, a), queried at (β·ŝ, π(ŝ)). A large β makes the search
care mostly about the state (TD3+BC); a small β lets the policy borrow actions from nearby states.

    points   x_i = [β·ŝ_i, a_i] for every transition i   (ŝ: states standardised as TD3+BC does)
    j(s)     = argmin_i ‖[β·ŝ, π(ŝ)] − x_i‖₂            (exact 1-NN; no gradient through j)
    L_π      = −λ mean Q_1(ŝ, π(ŝ)) + mean (π(ŝ) − a_j)²,   λ = α / mean|Q_1|
The critic, target smoothing, delayed actor and Polyak updates are TD3+BC's, unchanged.

Defaults per dataset family follow the official README: halfcheetah α = 40; hopper and walker2d α = 2.5;
antmaze α = β = 7.5 with rewards 10000·r − 1. β is always explicit (the official argparse default 1.0
differs from every published command's 2.0).
α = 40 is tuned to D4RL's halfcheetah data: on offrl's generated halfcheetah-medium, whose actions are narrower,
it lets the actor leave the data (docs/agents.md).

Deviations: the nearest neighbour comes from offrl.neighbours — on CPU a KD-tree (exact, as the
official scipy KDTree) for keys near the data and an exact block scan for keys far from it, such as an actor
at the action bounds makes (the query is a host call, which the suite allows only here); on a GPU an exact
chunked brute-force search that stays on the device (no host round trip, capturable). Evaluation follows
offrl's protocol, not the official 50 episodes every 1,000 steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from offrl.config import NonNegativeFloat
from offrl.neighbours import NearestNeighbours
from offrl.registry import register_agent
from offrl.agents.td3bc import TD3BC, Config as TD3BCConfig


@dataclass
class Config(TD3BCConfig):
    beta: NonNegativeFloat = 2.0  # β: weight of the state part in the neighbour search (README commands: 2.0)
    reward_scale: float = 1.0  # rewards become reward_scale·r + reward_shift (antmaze: 10000, -1)
    reward_shift: float = 0.0
    nn_method: Literal["auto", "kdtree", "brute"] = "auto"  # neighbour search; auto: kdtree on CPU, brute on GPU


class PRDC(TD3BC):
    def prepare(self, dataset, cache=None):
        super().prepare(dataset, cache)
        device = self.obs_norm.mean.device
        obs = self.obs_norm(torch.as_tensor(dataset.observations, dtype=torch.float32, device=device))
        actions = torch.as_tensor(dataset.actions, dtype=torch.float32, device=device)
        # Built from exactly the arrays the critic trains on (normalised states), as spec §2.8 warns.
        self.dataset_actions = actions
        self.neighbours = NearestNeighbours(torch.cat([self.config.beta * obs, actions], dim=-1),
                                            method=self.config.nn_method)

    def bc_target(self, obs, actions, pi):
        key = torch.cat([self.config.beta * obs, pi.detach()], dim=-1)  # [S, B, |S|+|A|]
        return self.dataset_actions[self.neighbours.query(key)]

    def update(self, batch, step):
        c = self.config
        if c.reward_scale != 1.0 or c.reward_shift != 0.0:
            batch = dict(batch, rewards=batch["rewards"] * c.reward_scale + c.reward_shift)
        return super().update(batch, step)


register_agent("prdc", PRDC, Config, paper="Ran et al., ICML 2023 (arXiv 2306.06569)",
               family="model-free, policy constraint", base="td3bc",
               family_defaults={"halfcheetah": {"alpha": 40.0, "beta": 2.0},
                                "hopper": {"alpha": 2.5, "beta": 2.0},
                                "walker2d": {"alpha": 2.5, "beta": 2.0},
                                "antmaze": {"alpha": 7.5, "beta": 7.5, "reward_scale": 10000.0,
                                            "reward_shift": -1.0}})
