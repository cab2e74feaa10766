"""OGSRL — Yan et al., "Offline Guarded Safe Reinforcement Learning for Medical Treatment Optimization",
NeurIPS 2025, arXiv 2505.16242; the official code's GMB-CPO (`models/cpo_guard.py`, `guardian.py`).

Plan in a model learned from the data, but only inside a data-supported "guardian" region G of (state, action)
pairs, and under a safety-cost constraint; so the policy can improve on the clinicians over whole trajectories
without drifting to unsupported treatments, and does not imitate their unsafe ones.

    model:     P̂(s'|s,a) = N(s,a,s') / N(s,a)  (on a tabular MDP, the official 1-NN model with random tie-breaks
               is exactly this); an unseen (s,a) takes the seen action of s nearest in (fluid, vaso) levels
    guardian:  G = {(s,a): N(s,a) ≥ n_min} ("count", the default), or the official code's KDE ("kde"):
               G = {p̂(s,a) ≥ q_α},  p̂ = Σ_rows exp(-|x - x_j|² / 2σ²) over x = (13 features, 2 levels) in
               [-1, 1], σ 0.535, q_α the α = 5% quantile of p̂ over the training rows. The KDE smooths support
               across neighbouring states, so it admits pairs the data never shows, whose model rows are
               guesses: on sepsis-clinician it let CPO reach 15% inadmissible actions (count: 0.8%), see
               docs/agents.md
    rollouts:  32 × H = 20 steps in P̂ from the data's initial states; a step with (s,a) ∉ G gets -ood_penalty
               and ood_cost and freezes the rollout there (absorbing) up to H
    objective: max J_r = E Σ γ^t r_t  s.t.  J_c = E Σ γ^t c_t ≤ d, with GAE(γ, λ) advantages for r and c
    CPO:       g = ∇L_r, b = ∇L_c (importance-ratio surrogates), x = F⁻¹g, y = F⁻¹b by conjugate gradient on
               Fisher-vector products; the step of Achiam et al. 2017 (TRPO step when the constraint is slack,
               the dual (λ*, ν*) step (x - ν*y)/λ* when it binds, -√(2δ/bᵀy)·y to recover when infeasible);
               backtracking accepts the first 0.8^j that keeps KL ≤ δ, does not lower L_r (unless recovering)
               and keeps the linearised cost ≤ max(J_c - d, 0).

Fixes of the official code (its pitfalls 1-10):
 1. one action order everywhere (the index 5·fluid + vaso; the guardian's levels are (fluid, vaso));
 2. model, rewards, ends and guardian labels are all indexed by (s, a) pairs: no row/key misalignment;
 3. the model, the guardian's reference set and its threshold come from the training dataset only;
 4. costs are non-negative and the constraint J_c ≤ d is unnormalised (cost advantages are not standardised),
    so CPO's correction acts when the model's cost exceeds d;
 5. evaluation is exact policy evaluation in the true MDP (no path strings, no model-based estimate);
 6. guardian labels are precomputed for all 716 × 25 pairs once (rollouts only visit dataset states);
 7. a step records (s_t, a_t) before moving to s_{t+1};
 8. rollouts are [S, M, H] tensors: GAE runs per rollout, stopping at its outcome, never across rollouts;
 9. frozen steps carry no action: they add their penalty to the return but not to the surrogate;
10. reward: ICU-Sepsis' own outcome (+1 on reaching survival, 0 on death; the rollout then ends), optionally
    plus sofa_weight · clip(-SOFA, -12.5, -2.5) / 12.5 per step. The official clip(-SOFA) ≤ -2.5 per step with
    no outcome reward makes reaching any outcome early, death included, the best plan; the outcome reward
    is the quantity evaluated (survival), so the shaping is off by default.
The paper's guardian is described as a polynomial sub-level set with a containment guarantee; its equations
and code are not public, so that variant is not implemented. Other deviations: the policy is categorical over the 25 actions on the state's one-hot (the official
Gaussian over 2 continuous doses has nothing to round to here); the OOD penalty is in outcome units (1 per
frozen step: leaving G is worse than death); 10 backtracking tries (official 30; 0.8^10 ≈ 0.1).

`seed_axis = False`: the trainer runs the seeds one by one. The update itself is written for a seed axis
(Fisher-vector products, the 10 CG iterations, the closed-form dual and the masked line search are [S, P]
tensor programs), but CPO decides on boundaries: after a corrected step the linearised cost constraint holds
with equality, and the line search accepts or rejects on it. The last-bit differences between a batched and
a single-seed solve flip those decisions, so seeds trained together would not equal seeds trained alone
(measured: 1e-1 apart in the policy's weights after 30 updates, from 1e-7 after one); one by one they do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.func import functional_call

from offrl.agent import Agent
from offrl.config import Fraction, NonNegativeFloat, NonNegativeInt, OpenUnitFloat, PositiveFloat, PositiveInt, UnitFloat, Widths
from offrl.errors import OfflineRLError
from offrl.nets import MLP, StackedLinear, init_seeded
from offrl.optim import adam, gradient_step
from offrl.registry import register_agent


@dataclass
class Config:
    horizon: PositiveInt = 20  # model-rollout steps (official MAX_TRAJ_LEN)
    rollouts: PositiveInt = 32  # rollouts per iteration and seed (official BATCH_SIZE)
    discount: UnitFloat = 0.99  # γ of returns and GAE
    gae_lambda: UnitFloat = 0.95  # λ of GAE
    hidden: Widths = (128, 128)  # tanh layers of the policy and both value networks
    value_lr: PositiveFloat = 1e-3  # Adam learning rate of V_r and V_c
    value_steps: PositiveInt = 2  # value regression steps per iteration
    max_kl: PositiveFloat = 0.01  # trust region δ on mean KL(old ‖ new)
    damping: NonNegativeFloat = 0.1  # added to the Fisher matrix (official 1.0: see docs/agents.md)
    cg_iters: PositiveInt = 10  # conjugate-gradient iterations
    backtrack_coef: OpenUnitFloat = 0.8  # line-search step shrink
    backtrack_iters: PositiveInt = 10  # line-search tries
    cost_limit: NonNegativeFloat = 1.0  # d: bound on the model's discounted cost per rollout (official 0.5, other units)
    guardian: Literal["kde", "count"] = "count"  # the support rule: a count N(s,a) ≥ min_count, or the official KDE
    guarded: bool = True  # enforce the guardian in rollouts (False: MB-CPO, the unguarded ablation)
    kde_bandwidth: PositiveFloat = 0.535  # σ of the guardian's Gaussian kernel (official)
    ood_quantile: Fraction = 0.05  # α: the share of training rows the KDE guardian declares outlying (official)
    min_count: PositiveInt = 20  # n_min of the count guardian (ICU-Sepsis' own admissibility threshold)
    ood_penalty: NonNegativeFloat = 1.0  # reward -ood_penalty on every frozen step (official -25 in SOFA units)
    ood_cost: NonNegativeFloat = 0.0  # cost on every frozen step (official: 1; here the cost stays physiological)
    sofa_weight: NonNegativeFloat = 0.0  # weight of the official clip(-SOFA) shaping, in outcome units
    bc_init_steps: NonNegativeInt = 300  # full-batch cloning steps of the policy before CPO (0: the official random start)
    bc_init_lr: PositiveFloat = 1e-2  # Adam learning rate of that cloning
    batch_size: PositiveInt = 32  # dataset rows the trainer samples per update (unused: updates roll out the model)


class TabularMLP(torch.nn.Module):
    """An MLP on the one-hot of a state index, with the first layer as a row lookup: [S, B] -> [S, B, out].
    The same function as the stacked MLP on the one-hot, but its backward touches only the rows visited,
    which is what makes the Fisher-vector products cheap."""

    def __init__(self, lead, n_inputs: int, hidden, out_dim: int):
        super().__init__()
        self.first = StackedLinear(lead, n_inputs, hidden[0])
        self.rest = MLP(lead, hidden[0], hidden[1:], out_dim, "tanh")

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        rows = self.first.weight[torch.arange(index.shape[0], device=index.device)[:, None], index]
        return self.rest(torch.tanh(rows + self.first.bias))


class OGSRL(Agent):
    action_space = "discrete"
    seed_axis = False  # see the module docstring

    def __init__(self, spec, config: Config, seeds, device="cpu"):
        super().__init__(spec, config, seeds, device)
        if spec.n_observations is None:
            raise OfflineRLError("ogsrl plans in a tabular model: it needs a dataset with discrete observations "
                                 "(sepsis-clinician)")
        n, k, S = spec.n_observations, spec.n_actions, self.num_seeds
        self.policy = init_seeded(TabularMLP((S,), n, config.hidden, k), self.seeds, "policy")
        with torch.no_grad():  # a near-uniform first policy
            self.policy.rest.net[-1].weight.mul_(0.01)
            self.policy.rest.net[-1].bias.zero_()
        # Values of (state, frozen): the index s + n·frozen.
        self.value_r = init_seeded(TabularMLP((S,), 2 * n, config.hidden, 1), self.seeds, "value_r")
        self.value_c = init_seeded(TabularMLP((S,), 2 * n, config.hidden, 1), self.seeds, "value_c")
        self.value_opt = adam([*self.value_r.parameters(), *self.value_c.parameters()], config.value_lr)
        # The model and the guardian: recomputed from the dataset in prepare(), so not saved in checkpoints.
        for name, shape, dtype in (("cdf", (n, k, n), torch.float32), ("model", (n, k, n), torch.float32),
                                   ("support", (n, k), torch.bool), ("known", (n,), torch.bool),
                                   ("outcome", (n,), torch.bool), ("reward", (n,), torch.float32),
                                   ("cost", (n,), torch.float32), ("starts", (1,), torch.long),
                                   ("start_dist", (n,), torch.float32)):
            self.register_buffer(name, torch.zeros(shape, dtype=dtype), persistent=False)

    # ---------------------------------------------------------------- model and guardian (from the data)
    def prepare(self, dataset, cache=None):
        c, n, k = self.config, self.spec.n_observations, self.spec.n_actions
        s = dataset.observations[:, 0].astype(np.int64)
        a = dataset.actions[:, 0].astype(np.int64)
        s2 = dataset.next_observations[:, 0].astype(np.int64)
        counts = np.zeros((n, k, n))
        np.add.at(counts, (s, a, s2), 1.0)
        pair = counts.sum(-1)  # N(s, a)
        known = pair.sum(1) > 0
        # An unseen (s, a) of a seen state moves like the seen action of s nearest in (fluid, vaso) levels:
        # the official 1-NN model's answer when the state's own rows are the nearest keys.
        levels = np.stack(np.divmod(np.arange(k), math.isqrt(k)), 1)
        dist = ((levels[:, None] - levels[None]) ** 2).sum(-1)  # [k, k]
        nearest = np.where(pair[:, None, :] > 0, dist[None], np.inf).argmin(-1)  # [n, k]
        model = counts[np.arange(n)[:, None], nearest]
        model /= np.maximum(model.sum(-1, keepdims=True), 1.0)
        model[~known] = np.eye(n)[~known][:, None]  # never entered: a rollout reaching it ends
        ends = dataset.terminals.astype(bool)
        outcome = np.zeros(n, bool)
        outcome[s2[ends]] = True
        entered = np.bincount(s2, minlength=n)
        reward = np.bincount(s2, weights=dataset.rewards, minlength=n) / np.maximum(entered, 1)
        if c.sofa_weight and "infos/sofa" in dataset.extras:
            sofa = np.bincount(s, weights=dataset.extras["infos/sofa"], minlength=n) / np.maximum(np.bincount(s, minlength=n), 1)
            reward = reward + c.sofa_weight * np.where(outcome, 0.0, np.clip(-sofa, -12.5, -2.5) / 12.5)
        cost_rows = dataset.extras.get("infos/cost")
        cost = (np.zeros(n) if cost_rows is None
                else np.bincount(s2, weights=cost_rows, minlength=n) / np.maximum(entered, 1))
        starts = np.flatnonzero(np.r_[True, (dataset.terminals | dataset.timeouts)[:-1]])
        support = self.guardian(dataset, s, a, pair)
        self.clone_behaviour(pair)
        for name, value in (("model", model), ("cdf", np.cumsum(model, -1)), ("support", support),
                            ("known", known), ("outcome", outcome), ("reward", reward), ("cost", cost),
                            ("starts", s[starts]), ("start_dist", np.bincount(s[starts], minlength=n) / len(starts))):
            setattr(self, name, torch.as_tensor(value, device=self.known.device).to(getattr(self, name).dtype))

    def guardian(self, dataset, s, a, pair) -> np.ndarray:
        """[n, k] bool: the supported (s, a) pairs, by the KDE rule or the count rule."""
        c, n, k = self.config, self.spec.n_observations, self.spec.n_actions
        if c.guardian == "count":
            return pair >= c.min_count
        if "infos/features" not in dataset.extras:
            raise OfflineRLError(f"the KDE guardian reads the state features (extra infos/features), which dataset "
                                 f"{dataset.name} lacks: use --set guardian=count")
        feats = dataset.extras["infos/features"].astype(np.float64)
        low, high = feats.min(0), feats.max(0)
        unit = 2 * (feats - low) / np.where(high > low, high - low, 1.0) - 1
        table = np.zeros((n, feats.shape[1]))
        table[s] = unit  # every row of a state has its centroid's features
        side = math.isqrt(k)
        levels = np.stack(np.divmod(np.arange(k), side), 1) / (side - 1) * 2 - 1  # (fluid, vaso) in [-1, 1]
        points = np.concatenate([np.repeat(table, k, 0), np.tile(levels, (n, 1))], 1)  # every (s, a), [n·k, d]
        weights = pair.reshape(-1)
        ref = points[weights > 0]  # the training rows, as distinct pairs with their counts
        w = weights[weights > 0] / weights.sum()
        density = np.zeros(n * k)
        ref_sq = (ref ** 2).sum(1)
        for lo in range(0, n * k, 1024):  # |x - x_j|² = |x|² + |x_j|² - 2 x·x_j, in chunks of pairs
            chunk = points[lo:lo + 1024]
            d2 = np.maximum((chunk ** 2).sum(1)[:, None] + ref_sq[None] - 2 * chunk @ ref.T, 0.0)
            density[lo:lo + 1024] = np.exp(-d2 / (2 * c.kde_bandwidth ** 2)) @ w
        seen = density[weights > 0]
        order = np.argsort(seen)
        cum = np.cumsum(weights[weights > 0][order]) / weights.sum()
        self.kde_threshold = float(seen[order][np.searchsorted(cum, c.ood_quantile)])
        inside = (density >= self.kde_threshold).reshape(n, k)
        return inside & (pair.sum(1) > 0)[:, None]

    def clone_behaviour(self, pair: np.ndarray) -> None:
        """Start the policy at the data's behaviour: full-batch maximum likelihood on the counts N(s, a) (no
        sampling, so it is the same for a seed trained alone or beside others)."""
        c = self.config
        if not c.bc_init_steps:
            return
        device = self.known.device
        counts = torch.as_tensor(pair, dtype=torch.float32, device=device)
        states = torch.arange(len(pair), device=device).expand(self.num_seeds, -1)
        opt = adam(self.policy.parameters(), c.bc_init_lr)
        for _ in range(c.bc_init_steps):
            log_probs = torch.log_softmax(self.logits(states), -1)  # [S, n, k]
            gradient_step(opt, -(counts * log_probs).sum((-1, -2)) / counts.sum())

    # ---------------------------------------------------------------- rollouts in the model
    def logits(self, states: torch.Tensor, params=None) -> torch.Tensor:
        """Policy logits [S, ..., k] of state indices [S, ...] (the stacked layers read [S, B, in])."""
        x = states.reshape(states.shape[0], -1)
        out = self.policy(x) if params is None else functional_call(self.policy, params, (x,))
        return out.reshape(*states.shape, -1)

    def values(self, net, states, frozen):
        index = states + self.spec.n_observations * frozen.long()
        return net(index.reshape(states.shape[0], -1)).reshape(states.shape)

    @torch.no_grad()
    def rollout(self) -> dict:
        """M rollouts of H steps per seed in the model, as [S, M, H] tensors."""
        c, S = self.config, self.num_seeds
        M, H = c.rollouts, c.horizon
        s = self.starts[self.noise.randint(len(self.starts), M)]
        frozen = torch.zeros_like(s, dtype=torch.bool)
        ended = torch.zeros_like(frozen)
        keys = ("state", "frozen", "action", "reward", "cost", "acted", "live", "done", "leaves")
        rec = {key: [] for key in keys}
        for _ in range(H):
            gumbel = -torch.log(-torch.log(self.noise.uniform(M, self.spec.n_actions)))
            a = (self.logits(s) + gumbel).argmax(-1)
            live = ~ended
            acted = live & ~frozen
            supported = self.support[s, a]
            leaves = acted & ~supported
            moves = acted & (supported | (not c.guarded))
            u = self.noise.uniform(M)
            nxt = (self.cdf[s, a] < u.unsqueeze(-1)).sum(-1).clamp(max=self.spec.n_observations - 1)
            nxt = torch.where(moves, nxt, s)
            outcome = moves & self.outcome[nxt]
            unknown = moves & ~self.known[nxt] & ~self.outcome[nxt]
            penalised = live & (frozen | leaves) if c.guarded else torch.zeros_like(live)
            reward = torch.where(moves, self.reward[nxt], 0.0) - c.ood_penalty * penalised.float()
            cost = torch.where(moves, self.cost[nxt], 0.0) + c.ood_cost * penalised.float()
            for key, value in zip(keys, (s, frozen, a, reward, cost, acted, live, outcome | unknown, leaves)):
                rec[key].append(value)
            if c.guarded:
                frozen = frozen | leaves
            ended = ended | outcome | unknown
            s = nxt
        return {key: torch.stack(value, -1) for key, value in rec.items()}

    def gae(self, rewards, values, live, done):
        """Advantages and value targets per rollout [S, M, H]: the recursion stops at a rollout's outcome and at
        the horizon (a finite-horizon objective: nothing is bootstrapped past H)."""
        c = self.config
        adv = torch.zeros_like(rewards)
        next_adv = torch.zeros_like(rewards[..., 0])
        next_value = torch.zeros_like(rewards[..., 0])
        for t in reversed(range(rewards.shape[-1])):
            keep = (1.0 - done[..., t].float())
            delta = rewards[..., t] + c.discount * keep * next_value - values[..., t]
            next_adv = torch.where(live[..., t], delta + c.discount * c.gae_lambda * keep * next_adv, 0.0)
            adv[..., t] = next_adv
            next_value = values[..., t]
        return adv, adv + values

    # ---------------------------------------------------------------- CPO
    def flat(self, tensors) -> torch.Tensor:
        return torch.cat([t.reshape(self.num_seeds, -1) for t in tensors], -1)

    def unflat(self, vector: torch.Tensor) -> dict:
        out, at = {}, 0
        for name, p in self.policy.named_parameters():
            size = p[0].numel()
            out[name] = vector[:, at:at + size].reshape(p.shape)
            at += size
        return out

    def surrogates(self, params, roll, logp_old, adv_r, adv_c, weights, probs_old):
        """Per seed: reward surrogate L_r (to raise), cost surrogate L_c (J_c's first-order change) and KL."""
        log_probs = torch.log_softmax(self.logits(roll["state"], params), -1)
        logp = log_probs.gather(-1, roll["action"].unsqueeze(-1))[..., 0]
        ratio = torch.exp(logp - logp_old)
        acted = roll["acted"].float()
        steps = acted.sum((-1, -2)).clamp(min=1.0)
        surr_r = (ratio * adv_r * acted).sum((-1, -2)) / steps
        surr_c = (ratio * adv_c * weights).sum((-1, -2)) / self.config.rollouts
        kl = ((probs_old * (torch.log(probs_old.clamp(min=1e-12)) - log_probs)).sum(-1) * acted).sum((-1, -2)) / steps
        return surr_r, surr_c, kl

    def cpo_direction(self, g, b, x, y, cost_gap):
        """Achiam et al. 2017's step for each seed from g, b, x = F⁻¹g, y = F⁻¹b and c = J_c - d: [S, P],
        and whether the seed is recovering (infeasible)."""
        delta, eps = self.config.max_kl, 1e-8
        q, r, s = (g * x).sum(-1), (g * y).sum(-1), (b * y).sum(-1).clamp(min=eps)
        c = cost_gap
        A, B = q - r ** 2 / s, 2 * delta - c ** 2 / s
        no_cost_grad = (b * b).sum(-1) <= 1e-12
        slack = ((c < 0) & (B < 0)) | (no_cost_grad & (c < 0))
        infeasible = (c >= 0) & (B < 0) & ~no_cost_grad
        # The dual of max gᵀd s.t. c + bᵀd ≤ 0, ½dᵀFd ≤ δ: d = (x - νy)/λ with ν = (r + λc)₊/s. ν > 0 on
        # Λ_a = {λ: r + λc > 0} where the optimum is sqrt(A/B); ν = 0 on Λ_b, where it is sqrt(q/2δ).
        rc = -r / torch.where(c.abs() < eps, torch.full_like(c, eps), c)
        inf = torch.full_like(c, float("inf"))
        zero = torch.zeros_like(c)
        lo_a, hi_a = torch.where(c < 0, zero, rc.clamp(min=0)), torch.where(c < 0, rc, inf)
        lo_b, hi_b = torch.where(c < 0, rc.clamp(min=0), zero), torch.where(c < 0, inf, rc)
        lam_a = torch.minimum(torch.maximum(torch.sqrt((A / B).clamp(min=0)), lo_a), hi_a).clamp(min=eps)
        lam_b = torch.minimum(torch.maximum(torch.sqrt(q.clamp(min=0) / (2 * delta)), lo_b), hi_b).clamp(min=eps)
        f_a = torch.where(lo_a <= hi_a, -0.5 * (A / lam_a + B * lam_a) + r * c / s, -inf)
        f_b = torch.where(lo_b <= hi_b, -0.5 * (q / lam_b + 2 * delta * lam_b), -inf)
        lam = torch.where(f_a >= f_b, lam_a, lam_b)
        nu = (r + lam * c).clamp(min=0) / s
        dual = (x - nu.unsqueeze(-1) * y) / lam.unsqueeze(-1)
        trpo = torch.sqrt(2 * delta / q.clamp(min=eps)).unsqueeze(-1) * x
        recover = -torch.sqrt(2 * delta / s).unsqueeze(-1) * y
        direction = torch.where(slack.unsqueeze(-1), trpo, torch.where(infeasible.unsqueeze(-1), recover, dual))
        return direction, infeasible

    def conjugate_gradient(self, fvp, rhs):
        x = torch.zeros_like(rhs)
        r, p = rhs.clone(), rhs.clone()
        rr = (r * r).sum(-1, keepdim=True)
        for _ in range(self.config.cg_iters):
            Ap = fvp(p)
            alpha = rr / (p * Ap).sum(-1, keepdim=True).clamp(min=1e-12)
            x, r = x + alpha * p, r - alpha * Ap
            rr_new = (r * r).sum(-1, keepdim=True)
            p = r + rr_new / rr.clamp(min=1e-12) * p
            rr = rr_new
        return x

    def update(self, batch, step):
        c = self.config
        roll = self.rollout()
        live = roll["live"]
        # Values, GAE and the value regression (on live steps only).
        with torch.no_grad():
            v_r = self.values(self.value_r, roll["state"], roll["frozen"])
            v_c = self.values(self.value_c, roll["state"], roll["frozen"])
            adv_r, ret_r = self.gae(roll["reward"], v_r, live, roll["done"])
            adv_c, ret_c = self.gae(roll["cost"], v_c, live, roll["done"])
        live_f = live.float()
        n_live = live_f.sum((-1, -2)).clamp(min=1.0)
        for _ in range(c.value_steps):
            loss_r = ((self.values(self.value_r, roll["state"], roll["frozen"]) - ret_r) ** 2 * live_f).sum((-1, -2)) / n_live
            loss_c = ((self.values(self.value_c, roll["state"], roll["frozen"]) - ret_c) ** 2 * live_f).sum((-1, -2)) / n_live
            gradient_step(self.value_opt, loss_r + loss_c)
        # Advantages on the steps the policy acted: reward standardised, cost raw (fix 4).
        acted = roll["acted"].float()
        n_acted = acted.sum((-1, -2), keepdim=True).clamp(min=1.0)
        mean = (adv_r * acted).sum((-1, -2), keepdim=True) / n_acted
        std = (((adv_r - mean) ** 2 * acted).sum((-1, -2), keepdim=True) / n_acted).sqrt()
        adv_r = (adv_r - mean) / (std + 1e-8)
        horizon = torch.arange(c.horizon, device=adv_r.device)
        weights = acted * c.discount ** horizon.float()
        discount = c.discount ** horizon.float()
        j_r = (roll["reward"] * discount).sum(-1).mean(-1)
        j_c = (roll["cost"] * discount).sum(-1).mean(-1)
        # CPO.
        params = dict(self.policy.named_parameters())
        with torch.no_grad():
            probs_old = torch.softmax(self.logits(roll["state"]), -1)
            logp_old = torch.log(probs_old.clamp(min=1e-12)).gather(-1, roll["action"].unsqueeze(-1))[..., 0]
        surr_r, surr_c, kl = self.surrogates(params, roll, logp_old, adv_r, adv_c, weights, probs_old)
        g = self.flat(torch.autograd.grad(surr_r.sum(), list(params.values()), retain_graph=True))
        b = self.flat(torch.autograd.grad(surr_c.sum(), list(params.values()), retain_graph=True))
        kl_grad = self.flat(torch.autograd.grad(kl.sum(), list(params.values()), create_graph=True))

        def fvp(v):
            hv = torch.autograd.grad((kl_grad * v).sum(), list(params.values()), retain_graph=True)
            return self.flat(hv) + c.damping * v

        x, y = self.conjugate_gradient(fvp, g), self.conjugate_gradient(fvp, b)
        cost_gap = j_c - c.cost_limit
        direction, infeasible = self.cpo_direction(g, b, x, y, cost_gap)
        with torch.no_grad():
            theta = self.flat(params.values()).detach()
            surr_r0, surr_c0 = surr_r.detach(), surr_c.detach()
            accepted, kl_new = [], []
            for j in range(c.backtrack_iters):
                trial = self.unflat(theta + c.backtrack_coef ** j * direction)
                new_r, new_c, new_kl = self.surrogates(trial, roll, logp_old, adv_r, adv_c, weights, probs_old)
                ok = ((new_kl <= c.max_kl) & ((new_r >= surr_r0) | infeasible)
                      & (cost_gap + new_c - surr_c0 <= cost_gap.clamp(min=0)))
                accepted.append(ok)
                kl_new.append(new_kl)
            accepted, kl_new = torch.stack(accepted), torch.stack(kl_new)  # [J, S]
            first = accepted.float().argmax(0)  # the first accepted try (0 when none: masked below)
            took = accepted.any(0)
            coef = torch.where(took, c.backtrack_coef ** first.float(), 0.0)
            new_theta = self.unflat(theta + coef.unsqueeze(-1) * direction)
            for name, p in params.items():
                p.copy_(new_theta[name])
        steps = live_f.sum((-1, -2)).clamp(min=1.0)
        return {"model_return": j_r, "model_cost": j_c, "value_loss": (loss_r + loss_c).detach(),
                "kl": torch.where(took, kl_new.gather(0, first.unsqueeze(0))[0], 0.0), "step_taken": took.float(),
                "recovering": infeasible.float(),
                "ood_rate": roll["leaves"].float().sum((-1, -2)) / acted.sum((-1, -2)).clamp(min=1.0),
                "rollout_steps": steps / c.rollouts}

    # ---------------------------------------------------------------- acting and model-side metrics
    @torch.no_grad()
    def act(self, obs, deterministic=True):
        logits = self.logits(obs[..., 0].long())
        if deterministic:
            return logits.argmax(-1, keepdim=True).float()
        return torch.distributions.Categorical(logits=logits).sample().unsqueeze(-1).float()

    @torch.no_grad()
    def model_metrics(self, actions: torch.Tensor, steps: int = 500) -> dict:
        """Exact statistics of policies (actions [S, n] per state) in this agent's own model, from the data's
        initial states: the survival (outcome reward) the model predicts, and the share of the rollout-horizon
        steps whose (s, π(s)) lies outside the guardian (a rollout stops acting once it leaves)."""
        n = self.spec.n_observations
        kernel = self.model[torch.arange(n, device=actions.device), actions]  # [S, n, n]
        inside = self.support.gather(1, actions.T).T.float()  # [S, n]
        alive = (self.known & ~self.outcome).float()
        mu = self.start_dist.expand(actions.shape[0], n).clone()
        survival = torch.zeros(actions.shape[0], device=actions.device)
        visits = torch.zeros_like(survival)
        outside = torch.zeros_like(survival)
        for t in range(steps):
            if t < self.config.horizon:
                visits += mu.sum(-1)
                outside += (mu * (1 - inside)).sum(-1)
            moving = mu * inside if self.config.guarded else mu  # a guarded rollout stops once it leaves
            nxt = torch.bmm(moving.unsqueeze(1), kernel)[:, 0]
            survival += (nxt * self.outcome.float() * self.reward).sum(-1)
            mu = nxt * alive
        return {"model_survival": survival, "guardian_ood_rate": outside / visits.clamp(min=1e-12)}


@dataclass
class UnguardedConfig(Config):
    guarded: bool = False  # MB-CPO: the guardian is measured but not enforced


class MBCPO(OGSRL):
    """OGSRL with the guardian off (`guarded = False`): the official MB-CPO, the ablation."""


register_agent("ogsrl", OGSRL, Config, paper="Yan et al., NeurIPS 2025, arXiv 2505.16242 (GMB-CPO)",
               family="model-based, guarded, cost-constrained (CPO)")
register_agent("mbcpo", MBCPO, UnguardedConfig, paper="Yan et al., NeurIPS 2025, arXiv 2505.16242 (MB-CPO "
               "ablation: no guardian)", family="model-based, cost-constrained (CPO)", base="ogsrl")
