"""Probabilistic dynamics ensembles (forward and reverse), trained as OfflineRL-Kit / MBPO train them.

What this module owns: the ensemble network, its training with hold-out early stopping and elites, one
model step (stochastic or deterministic), batched H-step model rollouts, the open-loop rollout error, and
the conversion to and from a cache artefact. Agents (MOPO, MOBILE, COMBO, CSVE, COCOA) use it; none of
them trains a model of its own.

A model belongs to the dataset, not to a seed. It is a property of the data (what s' and r follow (s, a)
in these transitions), so every seed of a run and every agent that needs a model of this dataset can
share one: MOPO, MOBILE, COMBO, CSVE and the four COCOA variants. Training it once per dataset and caching
it (offrl/cache.py, keyed by dataset fingerprint, stage and this config) is what makes those agents cheap:
the model is the longest pre-training job. So the model has no seed axis: its own seed (initial weights,
hold-out split, bootstrap resamples, shuffles, and its default sampling stream) is `DynamicsConfig.seed`,
fixed by the model config and part of the cache key. What does depend on the agent's seeds is the noise
of stochastic steps inside an agent's update: pass that agent's `SeedStreams` to `step`/`rollout`, and
each seed draws its own elite choices and Gaussian noise (docs/design.md §4).

Stepping: stochastic = per row one uniformly random elite, sample mu + sigma * eps (MOPO/MOBILE rollouts,
CSVE); deterministic = mean of the elites' means, no noise (COCOA anchors). Termination comes from the
dataset family's function, registered by its environment (offrl/termination.py), evaluated on
(s, a, predicted s'); a reverse model never terminates (COCOA uses a dummy function there).

The network, its loss, training schedule and the deliberate differences from OfflineRL-Kit: docs/dynamics.md.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from offrl.atomic import atomic_path
from offrl.errors import OfflineRLError
from offrl.nets import StackedLinear
from offrl.optim import adam
from offrl.rng import SeedStreams
from offrl.termination import termination_fn

DIRECTIONS = ("forward", "reverse")
# The cache stage name of each direction: one artefact per (dataset, stage, config).
STAGE_NAMES = {"forward": "dynamics", "reverse": "reverse_dynamics"}


@dataclass
class DynamicsConfig:
    """Defaults are OfflineRL-Kit's MOPO/MOBILE settings, which COCOA's stage A uses unchanged.

    The cache key of a fit is this config (offrl/cache.py hashes every field), so agents share a model
    exactly when their configs are equal: MOPO, COCOA's four variants and MOBILE as COCOA runs it (with
    the model of stage A) all use `DynamicsConfig()` and one fit per dataset. OfflineRL-Kit's own
    `run_mobile.py` caps its fit at 30 epochs (`--dynamics-max-epochs 30`; its `run_mopo.py` has no cap,
    and the MOBILE repository's default is none): `offlinerlkit_mobile()` is that config, a second entry.
    Numbers are stored as their field's type, so `lr=1` and `lr=1.0` name the same entry. An agent that
    exposes model settings names them `dynamics_<field>` in its config and builds the model's config with
    `from_agent_config`, so equal settings give equal keys."""
    members: int = 7                       # ensemble size E (OfflineRL-Kit --n-ensemble 7)
    elites: int = 5                        # members used to predict: lowest hold-out MSE (--n-elites 5)
    hidden: tuple[int, ...] = (200, 200, 200, 200)  # hidden widths, Swish activations (--dynamics-hidden-dims)
    # L2 penalty 0.5 * wd * |W|^2 per Linear layer (len(hidden) + 1 of them) (--dynamics-weight-decay)
    weight_decays: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    lr: float = 1e-3                       # Adam learning rate (--dynamics-lr)
    batch: int = 256                       # minibatch size per member (EnsembleDynamics.train batch_size)
    holdout_ratio: float = 0.2             # share of transitions held out (0.2 forward; COCOA reverse: 0.1)
    max_holdout: int = 1000                # ...capped at this many transitions (OfflineRL-Kit: 1000)
    max_epochs: int | None = None          # hard cap on epochs; None = stop by patience only (OfflineRL-Kit)
    max_updates: int | None = None         # hard cap on minibatch steps, may end mid-epoch (CSVE: 300 k); None = none
    patience: int = 5                      # stop after this many epochs with no member improving
    min_improvement: float = 0.01          # a member improves if its hold-out MSE drops by > 1 % (relative)
    logvar_bound_coef: float = 0.01        # weight of sum(max_logvar) - sum(min_logvar) in the loss
    max_logvar_init: float = 0.5           # initial upper soft bound of the log-variance
    min_logvar_init: float = -10.0         # initial lower soft bound of the log-variance
    predict_reward: bool = True            # model r as well (COCOA's reverse model: False)
    direction: str = "forward"             # "forward": (s, a) -> s', r; "reverse": (s', a) -> s, r
    seed: int = 0                          # the model's own seed: init, split, bootstraps, default noise

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        self.weight_decays = tuple(float(w) for w in self.weight_decays)
        # The cache hashes the values as JSON, where 1 and 1.0 differ: store each number as its field's type.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if f.type in ("float", float):
                setattr(self, f.name, float(value))
            elif f.type in ("int", int, "int | None") and float(value).is_integer():
                setattr(self, f.name, int(value))
        if self.direction not in DIRECTIONS:
            raise OfflineRLError(f"dynamics direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.max_updates is not None and self.max_updates < 1:
            raise OfflineRLError(f"dynamics: max_updates must be positive or None, got {self.max_updates}")
        if not 0 < self.elites <= self.members:
            raise OfflineRLError(f"dynamics: need 0 < elites <= members, got {self.elites} and {self.members}")
        if len(self.weight_decays) != len(self.hidden) + 1:
            raise OfflineRLError(f"dynamics: {len(self.hidden) + 1} weight decays needed (one per Linear "
                                 f"layer), got {len(self.weight_decays)}")

    @classmethod
    def cocoa_reverse(cls, **overrides) -> "DynamicsConfig":
        """COCOA's reverse model (stage B): no reward head, 10 % hold-out (run_anchor_seeker.py defaults)."""
        return cls(**{**dict(direction="reverse", predict_reward=False, holdout_ratio=0.1), **overrides})

    @classmethod
    def offlinerlkit_mobile(cls, **overrides) -> "DynamicsConfig":
        """OfflineRL-Kit's MOBILE fit (run_mobile.py): the same model, trained for at most 30 epochs."""
        return cls(**{**dict(max_epochs=30), **overrides})

    @classmethod
    def from_agent_config(cls, config, base: "DynamicsConfig | None" = None) -> "DynamicsConfig":
        """`base` (default: `DynamicsConfig()`) with every field the agent's config sets as `dynamics_<field>`
        (`dynamics_max_epochs`, `dynamics_hidden`, ...); fields it does not name keep base's values."""
        names = [f.name for f in dataclasses.fields(cls) if hasattr(config, f"dynamics_{f.name}")]
        return dataclasses.replace(base or cls(), **{n: getattr(config, f"dynamics_{n}") for n in names})

    @property
    def stage(self) -> str:
        return STAGE_NAMES[self.direction]


class StepOutput(NamedTuple):
    """One model step on observations [..., B, obs_dim] (L = the leading dims before B)."""
    next_obs: torch.Tensor           # [..., B, obs_dim]: the predicted s' (forward) or s (reverse)
    reward: torch.Tensor | None      # [..., B], None without a reward head
    terminal: torch.Tensor           # [..., B] bool (always False for a reverse model)
    member_mean: torch.Tensor        # [*L, E, B, out]: every member's mean of [predicted state, reward]
    member_std: torch.Tensor         # [*L, E, B, out]: every member's std (MOPO's penalty: max_e |std_e|)


def training_pairs(dataset, direction: str, predict_reward: bool) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets): forward ([s, a], [s' - s, r]); reverse ([s', a], [s - s', r])."""
    s, a, s2 = dataset.observations, dataset.actions, dataset.next_observations
    src, dst = (s, s2) if direction == "forward" else (s2, s)
    x = np.concatenate([src, a], axis=1).astype(np.float32)
    y = (dst - src).astype(np.float32)
    if predict_reward:
        y = np.concatenate([y, dataset.rewards.reshape(-1, 1).astype(np.float32)], axis=1)
    return x, y


class EnsembleDynamics(nn.Module):
    """E Gaussian members as one stacked network. See the module docstring for the model and its training."""

    def __init__(self, obs_dim: int, act_dim: int, config: DynamicsConfig | None = None,
                 family: str | None = None, termination: Callable | None = None):
        super().__init__()
        cfg = config or DynamicsConfig()
        self.config, self.family = cfg, family
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.out_dim = obs_dim + int(cfg.predict_reward)
        dims = [obs_dim + act_dim, *cfg.hidden, 2 * self.out_dim]
        self.layers = nn.ModuleList(StackedLinear((cfg.members,), a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.max_logvar = nn.Parameter(torch.full((self.out_dim,), cfg.max_logvar_init))
        self.min_logvar = nn.Parameter(torch.full((self.out_dim,), cfg.min_logvar_init))
        self.register_buffer("input_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("input_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("elite_index", torch.arange(cfg.elites))
        self.register_buffer("holdout_mse", torch.full((cfg.members,), math.inf))
        # The default stream of stochastic steps when the caller passes none: the model's own seed.
        self.noise = SeedStreams([cfg.seed], f"dynamics/{cfg.direction}")
        self._termination = termination
        self.report: dict = {}
        self.reset_parameters(torch.Generator().manual_seed(cfg.seed))

    # ---- network
    def reset_parameters(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            for layer in self.layers:
                std = 1.0 / (2.0 * math.sqrt(layer.in_features))
                nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std, generator=generator)
                layer.bias.zero_()

    @property
    def num_members(self) -> int:
        return self.config.members

    def normalise_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_std

    def forward(self, x: torch.Tensor, member: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised inputs [N, in] (shared) or [E, N, in] -> mean, log-variance [E, N, out].

        With `member`, only that member runs, on inputs [M, in] -> [M, out]."""
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h) if member is None else torch.addmm(layer.bias[member, 0], h, layer.weight[member])
            if i < len(self.layers) - 1:
                h = F.silu(h)
        mean, logvar = h.chunk(2, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    @torch.no_grad()
    def member_mse(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-member MSE of the mean on raw (unstandardised) inputs [N, in] and targets [N, out]: [E]."""
        mean, _ = self(self.normalise_inputs(inputs))
        return (mean - targets).pow(2).mean(dim=(1, 2))

    # ---- stepping
    def _draws(self, lead: tuple[int, ...], streams: SeedStreams | None):
        """Elite choice [N], Gaussian noise [N, out] for N = prod(lead) rows, and the number of seed blocks.

        With a caller's `streams` of S seeds the observations must be [S, ..., B, d]: seed s draws the
        numbers of its own rows from its own stream, so they do not depend on the other seeds. The rows of
        seed s are then the s-th of S equal blocks (1 block otherwise)."""
        streams = self.noise if streams is None else streams
        n = math.prod(lead)
        blocks = 1
        if len(lead) >= 2 and lead[0] == streams.num_seeds:
            shape, blocks = lead[1:], streams.num_seeds
        elif streams.num_seeds == 1:
            shape = (n,)
        else:
            raise OfflineRLError(f"dynamics step: streams of {streams.num_seeds} seeds need observations "
                                 f"[{streams.num_seeds}, ..., B, d], got leading dims {list(lead)}")
        choice = streams.randint(self.config.elites, *shape).reshape(n)
        eps = streams.normal(*shape, self.out_dim).reshape(n, self.out_dim)
        return choice, eps, blocks

    def _terminal(self, obs, act, next_obs) -> torch.Tensor:
        if self.config.direction == "reverse":
            return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)
        if self._termination is None:
            self._termination = termination_fn(self.family)
        return self._termination(obs, act, next_obs)

    def step(self, obs: torch.Tensor, act: torch.Tensor, deterministic: bool = False,
             streams: SeedStreams | None = None, all_members: bool = True) -> StepOutput:
        """One model step for observations and actions [..., B, d] (any leading dims, e.g. [S, B, d]).

        Stochastic: each row picks one elite uniformly and samples its Gaussian (reparameterised, so it is
        differentiable w.r.t. the action, as CSVE's actor needs). Deterministic: mean of the elites' means.
        Not wrapped in no_grad: callers decide; the fitted model's parameters are frozen.

        all_members=False is for callers that use only the sampled step (CSVE): member_mean and member_std
        are None, and on a CPU each row runs through the member it picked only (1/E of the matmuls; rows
        grouped by seed block and member, so a seed's numbers do not depend on the other seeds). On CUDA
        every member still runs, since the grouping has data-dependent sizes that graph capture forbids."""
        state, reward, member_mean, member_std = self._predict(obs, act, deterministic, streams, all_members)
        terminal = self._terminal(obs, act, state)
        return StepOutput(state, reward, terminal, member_mean, member_std)

    def elite_mean_state(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """The deterministic step's next state (the mean of the elites' means) for observations and actions
        [..., B, d], computed through the elites only and without termination (COCOA's anchor roll-out).
        Equal to `step(obs, act, deterministic=True).next_obs`. Not wrapped in no_grad: callers decide."""
        lead = tuple(obs.shape[:-1])
        o = obs.reshape(-1, self.obs_dim)
        h = self.normalise_inputs(torch.cat([o, act.reshape(-1, self.act_dim)], dim=-1))
        for i, layer in enumerate(self.layers):
            h = torch.baddbmm(layer.bias.index_select(0, self.elite_index),
                              h if h.dim() == 3 else h.expand(self.config.elites, *h.shape),
                              layer.weight.index_select(0, self.elite_index))
            if i < len(self.layers) - 1:
                h = F.silu(h)
        return (o + h[..., :self.obs_dim].mean(0)).reshape(*lead, self.obs_dim)

    def _predict(self, obs, act, deterministic, streams, all_members=True):
        lead = tuple(obs.shape[:-1])
        if tuple(act.shape[:-1]) != lead:
            raise OfflineRLError(f"dynamics step: observations {list(obs.shape)} and actions "
                                 f"{list(act.shape)} have different leading dims")
        o = obs.reshape(-1, self.obs_dim)
        a = act.reshape(-1, self.act_dim)
        x = self.normalise_inputs(torch.cat([o, a], dim=-1))
        if not deterministic:
            choice, eps, blocks = self._draws(lead, streams)
            member = self.elite_index[choice]
        if not (all_members or deterministic) and x.device.type == "cpu":
            pred = self._sample_picked_members(x, member, eps, blocks)
            return self._split(o, pred, lead) + (None, None)
        mean, logvar = self(x)  # [E, N, out]
        std = (0.5 * logvar).exp()
        if deterministic:
            pred = mean.index_select(0, self.elite_index).mean(0)
        else:
            rows = torch.arange(o.shape[0], device=o.device)
            pred = mean[member, rows] + std[member, rows] * eps
        if not all_members:
            return self._split(o, pred, lead) + (None, None)
        member_mean = torch.cat([mean[..., :self.obs_dim] + o, mean[..., self.obs_dim:]], dim=-1)

        def members(t):  # [E, N, out] -> [*L, E, B, out]
            return t.reshape(t.shape[0], *lead, t.shape[-1]).movedim(0, len(lead) - 1)

        return self._split(o, pred, lead) + (members(member_mean), members(std))

    def _split(self, o, pred, lead) -> tuple:
        """Rows' [Δs, r] predictions -> (state [*lead, obs_dim], reward [*lead] or None)."""
        state = (o + pred[:, :self.obs_dim]).reshape(*lead, self.obs_dim)
        reward = pred[:, self.obs_dim].reshape(lead) if self.config.predict_reward else None
        return state, reward

    def _sample_picked_members(self, x, member, eps, blocks):
        """Sampled [Δs, r] of rows x [N, in] (standardised), each through its own member only.

        Rows are grouped by (seed block, member) with a stable sort, each group runs through its member,
        and the results go back to row order. The group sizes are host numbers: a CPU-only path."""
        n, e = x.shape[0], self.config.members
        key = member + e * torch.arange(blocks, device=x.device).repeat_interleave(n // blocks)
        order = key.argsort(stable=True)
        counts = torch.bincount(key, minlength=blocks * e).tolist()
        pieces = []
        for k, (xk, ek) in enumerate(zip(x[order].split(counts), eps[order].split(counts))):
            if len(xk):
                mean, logvar = self(xk, member=k % e)
                pieces.append(mean + (0.5 * logvar).exp() * ek)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n, device=x.device)
        return torch.cat(pieces)[inverse]

    def elite_samples(self, obs: torch.Tensor, act: torch.Tensor, num_samples: int,
                      streams: SeedStreams | None = None) -> torch.Tensor:
        """Predicted states sampled from every elite's Gaussian, `num_samples` from each (MOBILE's penalty;
        OfflineRL-Kit's `sample_next_obss`): observations and actions [S, B, d] (S = the streams' seeds) or
        [B, d] (a one-seed stream) -> [S, num_samples, elites, B, obs_dim] (or [num_samples, elites, B, obs_dim]).
        Seed s draws its noise from its own stream. Not wrapped in no_grad: callers decide."""
        streams = self.noise if streams is None else streams
        flat = obs.dim() == 2
        if flat:
            obs, act = obs.unsqueeze(0), act.unsqueeze(0)
        if obs.dim() != 3 or obs.shape[0] != streams.num_seeds or act.shape[:2] != obs.shape[:2]:
            raise OfflineRLError(f"dynamics elite samples: observations {list(obs.shape)} and actions "
                                 f"{list(act.shape)} do not fit streams of {streams.num_seeds} seeds")
        S, B, d = obs.shape
        x = self.normalise_inputs(torch.cat([obs, act], dim=-1).reshape(S * B, -1))
        mean, logvar = self(x)  # [E, S·B, out]
        K = self.config.elites

        def per_seed(t):  # [E, S·B, out] -> the elites' state part [S, 1, K, B, d]
            return t.index_select(0, self.elite_index)[..., :d].reshape(K, S, B, d).transpose(0, 1).unsqueeze(1)

        eps = streams.normal(num_samples, K, B, d)  # [S, n, K, B, d]
        samples = obs[:, None, None] + per_seed(mean) + per_seed((0.5 * logvar).exp()) * eps
        return samples[0] if flat else samples

    @torch.no_grad()
    def rollout(self, policy_fn: Callable[[torch.Tensor], torch.Tensor], start_obs: torch.Tensor, horizon: int,
                deterministic: bool = False, streams: SeedStreams | None = None,
                penalty_fn: Callable[[torch.Tensor, torch.Tensor, StepOutput], torch.Tensor] | None = None,
                all_members: bool = True) -> dict[str, torch.Tensor]:
        """H model steps from start_obs [..., B, obs_dim] with actions policy_fn(obs [..., B, obs_dim]).

        Returns transitions stacked over steps, [..., H, B, ...]: observations, actions, rewards (if the
        model has a reward head), next_observations, terminals and mask. Every row is stepped every step
        (fixed shapes, no host sync); `mask` is True for a transition taken before its row terminated, so
        the step that terminates is valid (terminal=True: do not bootstrap from its next state) and the
        steps after it are not. A reverse model's transitions are returned in forward-time order:
        observations = the predicted earlier state, next_observations = the state it was predicted from.
        With `penalty_fn(obs, act, step_output) -> [..., B]` (MOPO's uncertainty) the result also holds
        `penalties`, that function at every step. `all_members` is passed to `step` (False: every member's
        mean and std are not computed, and on a CPU each row runs through its own member only).
        """
        obs = start_obs
        alive = torch.ones(obs.shape[:-1], dtype=torch.bool, device=obs.device)
        keys = ("observations", "actions", "rewards", "next_observations", "terminals", "mask", "penalties")
        out: dict[str, list] = {k: [] for k in keys}
        for _ in range(horizon):
            act = policy_fn(obs)
            res = self.step(obs, act, deterministic=deterministic, streams=streams, all_members=all_members)
            if penalty_fn is not None:
                out["penalties"].append(penalty_fn(obs, act, res))
            forward = self.config.direction == "forward"
            out["observations"].append(obs if forward else res.next_obs)
            out["next_observations"].append(res.next_obs if forward else obs)
            out["actions"].append(act)
            out["rewards"].append(res.reward)
            out["terminals"].append(res.terminal)
            out["mask"].append(alive)
            alive = alive & ~res.terminal
            obs = res.next_obs
        dim = obs.dim() - 2  # the step axis goes just before B
        return {k: torch.stack(v, dim=dim) for k, v in out.items() if v and v[0] is not None}

    @torch.no_grad()
    def rollout_error(self, dataset, horizons: Sequence[int] = (1, 5), max_starts: int = 10_000,
                      chunk: int = 8192) -> dict[int, float]:
        """Mean squared error (over starts and state dims) of H-step open-loop deterministic predictions.

        Forward: from s_t, replay the dataset's actions a_t .. a_{t+H-1} through the model, compare with
        the dataset's s_{t+H}. Reverse: from s_{t+H}, replay the actions backwards, compare with s_t. Only
        windows inside one episode count (no terminal/timeout before the last step and next_obs[k] ==
        obs[k+1]); at most `max_starts` evenly spaced windows per H."""
        dev = self.input_mean.device
        obs = torch.as_tensor(dataset.observations, device=dev)
        act = torch.as_tensor(dataset.actions, device=dev)
        nxt = torch.as_tensor(dataset.next_observations, device=dev)
        ends = np.asarray(dataset.terminals) | np.asarray(dataset.timeouts)
        linked = ~ends[:-1] & (dataset.next_observations[:-1] == dataset.observations[1:]).all(axis=1)
        broken = np.concatenate([[0], np.cumsum(~linked)])  # broken[k] = breaks among links 0..k-1
        errors = {}
        for h in horizons:
            starts = np.arange(len(dataset) - h + 1)
            starts = starts[broken[starts + h - 1] - broken[starts] == 0]
            if len(starts) == 0:
                errors[h] = float("nan")
                continue
            if len(starts) > max_starts:
                starts = starts[np.linspace(0, len(starts) - 1, max_starts).round().astype(int)]
            total = 0.0
            for i in range(0, len(starts), chunk):
                st = torch.as_tensor(starts[i:i + chunk], device=dev)
                if self.config.direction == "forward":
                    s, target = obs[st], nxt[st + h - 1]
                    for k in range(h):
                        s = self._predict(s, act[st + k], True, None)[0]
                else:
                    s, target = nxt[st + h - 1], obs[st]
                    for k in reversed(range(h)):
                        s = self._predict(s, act[st + k], True, None)[0]
                total += (s - target).pow(2).mean(-1).sum().item()
            errors[h] = total / len(starts)
        return errors

    # ---- artefacts
    def to_artifact(self, report: dict | None = None) -> dict:
        """A dict the cache can store (tensors, numbers, strings): enough to rebuild the model anywhere."""
        return {"kind": "offrl.dynamics.EnsembleDynamics", "format": 1,
                "obs_dim": self.obs_dim, "act_dim": self.act_dim, "family": self.family,
                "config": {k: list(v) if isinstance(v, tuple) else v
                           for k, v in dataclasses.asdict(self.config).items()},
                "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
                "report": dict(report if report is not None else self.report)}

    @classmethod
    def from_artifact(cls, artifact: dict, device="cpu", termination: Callable | None = None) -> "EnsembleDynamics":
        model = cls(artifact["obs_dim"], artifact["act_dim"], DynamicsConfig(**artifact["config"]),
                    family=artifact["family"], termination=termination)
        model.load_state_dict(artifact["state_dict"])
        model.report = dict(artifact.get("report", {}))
        return model.to(device).eval().requires_grad_(False)


def _optimiser(model: EnsembleDynamics, cfg: DynamicsConfig) -> torch.optim.Adam:
    """Adam whose coupled weight decay is the L2 penalty 0.5 * wd_l * |W_l|^2 on each layer's weights.

    Adam adds weight_decay * w to the gradient before its update, which is the gradient of that penalty, so
    this is OfflineRL-Kit's loss term exactly (agreement to 6e-8 after 30 steps, float rounding); it skips
    computing the penalty and its backward on every batch (12.8-13.3 ms instead of 14.6-16.8 ms per batch of
    5 x 100 on hopper, one CPU thread)."""
    groups = [dict(params=[layer.weight], weight_decay=wd) for wd, layer in zip(cfg.weight_decays, model.layers)]
    groups.append(dict(params=[p for layer in model.layers for p in [layer.bias]]
                       + [model.max_logvar, model.min_logvar], weight_decay=0.0))
    return adam(groups, cfg.lr)


def fit(dataset, config: DynamicsConfig | None = None, log: Callable[[str], None] = print,
        device="cpu", log_every: int = 10, checkpoint: str | Path | None = None,
        checkpoint_every_s: float = 60.0) -> tuple[EnsembleDynamics, dict]:
    """Train an ensemble on `dataset`. Returns the model (best weights per member, elites set, frozen) and a
    report: hold-out MSE per member, elites, epochs, wall-clock seconds, split sizes, hold-out indices.

    With `checkpoint` (a file path) the fit is resumable: at the end of an epoch, at most every
    `checkpoint_every_s` seconds, the whole training state (weights, Adam, best weights and hold-out MSEs,
    patience count, bootstrap order, generator state, seconds spent) is written there atomically, and a
    later call with the same path continues from it, giving the same model as an uninterrupted fit. A fit
    on 1 M transitions takes hours on a CPU (146 s per epoch on hopper-medium), so a killed run must not
    start over. A checkpoint that does not load or belongs to other data or settings is ignored (logged)."""
    cfg = config or DynamicsConfig()
    t0 = time.perf_counter()
    device = torch.device(device)
    x_np, y_np = training_pairs(dataset, cfg.direction, cfg.predict_reward)
    x, y = torch.as_tensor(x_np, device=device), torch.as_tensor(y_np, device=device)
    n = len(x)
    n_hold = min(int(n * cfg.holdout_ratio), cfg.max_holdout)
    if n_hold < 1 or n - n_hold < 1:
        raise OfflineRLError(f"dynamics: dataset {dataset.name} has {n} transitions: too few for a hold-out "
                             f"split of {cfg.holdout_ratio:.0%}")
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    perm = torch.randperm(n, generator=gen, device=device)
    hold_idx, train_idx = perm[:n_hold], perm[n_hold:]

    model = EnsembleDynamics(dataset.observations.shape[1], dataset.actions.shape[1], cfg,
                             family=dataset.family).to(device)
    x_train = x[train_idx]
    mean, std = x_train.mean(0), x_train.std(0, unbiased=False)  # population std, as np.std
    model.input_mean.copy_(mean)
    model.input_std.copy_(torch.where(std < 1e-12, torch.ones_like(std), std))
    xt, yt = model.normalise_inputs(x_train), y[train_idx]
    xh, yh = x[hold_idx], y[hold_idx]

    E, T = cfg.members, len(train_idx)
    boot = torch.randint(T, (E, T), generator=gen, device=device)  # each member's bootstrap resample
    opt = _optimiser(model, cfg)
    member_params = [p for layer in model.layers for p in (layer.weight, layer.bias)]
    saved = [p.detach().clone() for p in member_params]
    best = torch.full((E,), math.inf, device=device)
    epoch, stale, stopped, spent = 0, 0, "patience", 0.0
    per_epoch = math.ceil(T / cfg.batch)  # minibatch steps in a full epoch
    identity = dict(config=dataclasses.asdict(cfg), n=n, obs_dim=model.obs_dim, act_dim=model.act_dim,
                    holdout_sum=float(yh.double().sum()))
    resumed = _load_progress(checkpoint, identity, device, log)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["optimiser"])
        for s, v in zip(saved, resumed["saved"]):
            s.copy_(v)
        best.copy_(resumed["best"])
        boot = resumed["boot"].to(device=device, dtype=torch.long)
        gen.set_state(resumed["generator"])
        epoch, stale, spent = int(resumed["epoch"]), int(resumed["stale"]), float(resumed["spent_s"])
        log(f"dynamics ({cfg.direction}) on {dataset.name}: resumed after epoch {epoch} from {checkpoint}")
    else:
        log(f"dynamics ({cfg.direction}) on {dataset.name}: {E} members, {T} training and {n_hold} hold-out "
            f"transitions, device {device}")
    last_save = time.perf_counter()
    while True:
        epoch += 1
        model.train()
        total = torch.zeros((), device=device)
        batches = 0
        # Only the last epoch can be cut short, so the steps before this one are whole epochs.
        done = (epoch - 1) * per_epoch
        budget = per_epoch if cfg.max_updates is None else min(per_epoch, cfg.max_updates - done)
        for start in range(0, budget * cfg.batch, cfg.batch):
            idx = boot[:, start:start + cfg.batch]  # [E, b]
            mu, logvar = model(xt[idx])
            target = yt[idx]
            nll = ((mu - target).pow(2) * torch.exp(-logvar)).mean(dim=(1, 2)) + logvar.mean(dim=(1, 2))
            loss = nll.sum() + cfg.logvar_bound_coef * (model.max_logvar.sum() - model.min_logvar.sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            batches += 1
        model.eval()
        mse = model.member_mse(xh, yh)
        improved = torch.isinf(best) | ((best - mse) / best > cfg.min_improvement)
        if bool(improved.any()):
            best = torch.where(improved, mse, best)
            with torch.no_grad():
                for p, s in zip(member_params, saved):
                    s[improved] = p[improved]
            stale = 0
        else:
            stale += 1
        # Reshuffle every member's bootstrap rows for the next epoch.
        boot = boot.gather(1, torch.rand((E, T), generator=gen, device=device).argsort(dim=1))
        train_loss = (total / batches).item()  # the NLL and bound terms; the weight decay lives in Adam
        if epoch == 1 or epoch % log_every == 0:
            log(f"dynamics ({cfg.direction}) epoch {epoch}: train loss {train_loss:.4g}, hold-out MSE "
                f"{', '.join(f'{v:.3g}' for v in mse.tolist())}")
        if stale >= cfg.patience:
            break
        if cfg.max_epochs is not None and epoch >= cfg.max_epochs:
            stopped = "max_epochs"
            break
        if cfg.max_updates is not None and done + batches >= cfg.max_updates:
            stopped = "max_updates"
            break
        if checkpoint is not None and time.perf_counter() - last_save >= checkpoint_every_s:
            _save_progress(checkpoint, identity, dict(
                model=model.state_dict(), optimiser=opt.state_dict(), saved=saved, best=best,
                boot=boot.to(torch.int32 if T < 2 ** 31 else torch.long), generator=gen.get_state(),
                epoch=epoch, stale=stale, spent_s=spent + time.perf_counter() - t0))
            last_save = time.perf_counter()

    with torch.no_grad():
        for p, s in zip(member_params, saved):
            p.copy_(s)
        elites = best.argsort()[:cfg.elites]
        model.elite_index.copy_(elites)
        model.holdout_mse.copy_(best)
    model.eval().requires_grad_(False)
    wall = spent + time.perf_counter() - t0
    report = dict(direction=cfg.direction, dataset=dataset.name, holdout_mse=best.tolist(),
                  elites=elites.tolist(), holdout_mse_elites=float(best[elites].mean()), epochs=epoch,
                  updates=done + batches,
                  stopped=stopped, train_loss=train_loss, wall_s=wall, train_size=T, holdout_size=n_hold,
                  holdout_index=hold_idx.tolist())
    model.report = report
    log(f"dynamics ({cfg.direction}) fitted in {wall:.1f}s: {epoch} epochs, {report['updates']} updates "
        f"(stopped by {stopped}), elites "
        f"{report['elites']}, hold-out MSE of the elites {report['holdout_mse_elites']:.4g}")
    return model, report


def _save_progress(path, identity: dict, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(dict(identity=identity, **state), tmp)


def _load_progress(path, identity: dict, device, log) -> dict | None:
    """The saved training state at `path` if it is there, loads, and was made by this very fit."""
    if path is None or not Path(path).exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: start over rather than trust it
        log(f"dynamics: ignoring the unreadable fit checkpoint {path} ({type(exc).__name__}); starting over")
        return None
    if state.get("identity") != identity:
        log(f"dynamics: ignoring the fit checkpoint {path}: it was made for other data or settings")
        return None
    return state


def load_or_fit(dataset, config: DynamicsConfig | None = None, cache=None, log: Callable[[str], None] = print,
                device="cpu") -> EnsembleDynamics:
    """The dataset's model for `config`: from `cache` (offrl.cache.Cache) when it has it, else fitted (and
    stored there). Stage "dynamics" or "reverse_dynamics"; the cache seed is the model's own config.seed."""
    cfg = config or DynamicsConfig()

    def build(progress=None) -> dict:
        model, report = fit(dataset, cfg, log=log, device=device, checkpoint=progress)
        return model.to_artifact(report)

    artifact = build() if cache is None else cache.get_or_build(dataset, cfg.stage, cfg, cfg.seed, build, log=log,
                                                                resumable=True)
    return EnsembleDynamics.from_artifact(artifact, device=device)


__all__ = ["DynamicsConfig", "EnsembleDynamics", "StepOutput", "fit", "load_or_fit", "training_pairs"]
