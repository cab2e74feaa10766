"""COCOA — Song, Lee & Kim, "Compositional Conservatism: A Transductive Approach in Offline Reinforcement
Learning", ICLR 2024, arXiv 2404.04682. Official code: `runamu/compositional-conservatism` (OfflineRL-Kit based).

COCOA changes what the policy and the critics read, not their losses: a state s is read as an anchor s̃ and
a difference Δ = s - s̃, through a bilinear transductive layer. The anchor is where H steps of a learned
anchor seeker π̃ lead from s in the forward model (elite mean, no noise); π̃ was fitted on reverse-model
roll-outs that walk away from the data, so anchors lie where the data is, and both s̃ and Δ are familiar.

    anchor:   s̃_0 = s,  s̃_k+1 = s̃_k + mean_elites μ_e(s̃_k, π̃(s̃_k)),  s̃ = s̃_H,  Δ = s - s̃   (no gradient)
    network:  h_t = ⟨f_t(Δ[, a]), g_t(s̃[, a])⟩, t = 1..T;  output = backbone(h)      (offrl/transductive.py)
    losses:   the base's, unchanged: CQL, IQL, MOPO or MOBILE (agents/cql.py, agents/iql.py, agents/mopo.py,
              agents/mobile.py)

Stages (each cached per dataset and shared by every base and seed): A the forward ensemble (the same entry as
MOPO's), B the reverse ensemble, then reverse roll-outs and the seeker fit (offrl/anchors.py, which lists
the two deliberate deviations there: uniform start states, shuffled minibatches).

One file, four registered agents: `cocoa-cql`, `cocoa-iql`, `cocoa-mopo`, `cocoa-mobile`, each the base's
agent class with this file's network construction (the hooks build_obs_encoder, build_actor, build_critic,
build_value) and the base's Config plus COCOA's fields, so `diff` against a base shows the change of input
and nothing of the update. `offrl run --agent cocoa --set base=mopo` names the family: the registry resolves
it to `cocoa-mopo` before the run starts, so run.yaml, results rows, `offrl table` and leaderboards carry
`cocoa-<base>` and sit beside the plain base. The encoder s -> [Δ, s̃] replaces the base's observation
normaliser, which every base applies once per update to the batch's states and next states: each batch's
anchors are computed once per update and reused by every network call (CQL's repeated states included).

The default base is IQL: it is the cheapest on a CPU (about 3.5× TD3+BC's FLOPs per update, against ~1,000×
for CQL's 8,192-wide f/g), needs no per-dataset tuning, and has the paper's MuJoCo column. The official
README's example is MOPO with H = 1 (`--set base=mopo`).

Defaults (official code; the spec's table): backbone / f,g widths / E per base — CQL 3×256 / 3×256 / 32
(f/g output 8,192), IQL, MOPO, MOBILE 2×100 / 2×64 / 4 (output 256). CQL runs with OfflineRL-Kit's
logsumexp quirk on and log σ in [-5, 2], as COCOA's numbers were made; IQL with the return-range reward
scale. The forward model is OfflineRL-Kit's fit without an epoch cap for every base (COCOA's stage A, also
for MOBILE). H = 1, the only value in the official repository (its stage C reads H from a key the seeker
script never writes; the paper's per-dataset H was not found), so no per-family default is set.
Deviations: the seeker's two (above); IQL's networks use offrl's default initialisation, not orthogonal
with gain √2, and its log σ is clamped to [-5, 2] (official: unclamped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from offrl.anchors import AnchorEncoder, SeekerConfig, load_or_build_seeker
from offrl.config import NonNegativeFloat, PositiveInt, Seed, Widths
from offrl.critics import EnsembleCritic
from offrl.dynamics import DynamicsConfig, load_or_fit
from offrl.errors import OfflineRLError
from offrl.nets import GaussianActor, TanhGaussianActor, init_seeded
from offrl.registry import register_agent, register_variants
from offrl.transductive import TransductiveNet

from offrl.agents import cql, iql, mobile, mopo


@dataclass
class CocoaFields:
    """COCOA's settings on top of a base's Config."""
    horizon: PositiveInt = 1  # H: anchor-seeking steps, the same for actor and critics (official: 1)
    embed_hidden: Widths = (64, 64)  # f and g hidden widths; T = the last one (per base below)
    embedding: PositiveInt = 4  # E: length of each of the T vectors whose inner products are the feature
    dynamics_hidden: Widths = (200, 200, 200, 200)  # forward and reverse model widths, Swish (stage A, B)
    dynamics_weight_decays: tuple[NonNegativeFloat, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)  # L2 per layer
    dynamics_max_epochs: PositiveInt | None = None  # cap on the forward model's epochs; None: patience only
    dynamics_seed: Seed = 0  # the models' and the seeker's own seed (shared by the agent's seeds)
    reverse_max_epochs: PositiveInt | None = None  # cap on the reverse model's epochs; None: patience only
    seeker_rollout_starts: PositiveInt = 300_000  # dataset states the reverse roll-outs start from
    seeker_rollout_length: PositiveInt = 5  # reverse steps per roll-out (--rollout_length)
    seeker_scale: NonNegativeFloat = 0.8  # the divergent policy's scale of its direction (--scale_coef)
    seeker_noise: NonNegativeFloat = 0.1  # its Gaussian noise (--noise_coef)
    seeker_hidden: Widths = (100, 100)  # the seeker's widths
    seeker_max_epochs: PositiveInt = 50  # cap on the seeker's epochs (early stop: < 0.5 % change 5 times)
    seeker_patience: PositiveInt = 5  # epochs in a row of < 0.5 % loss change that stop the fit


@dataclass
class CQLConfig(CocoaFields, cql.Config):
    base: Literal["cql"] = "cql"  # the base algorithm (`--agent cocoa --set base=...` picks the variant)
    hidden: Widths = (256, 256, 256)  # backbone widths of actor and critics
    embed_hidden: Widths = (256, 256, 256)  # f/g output T·E = 256·32 = 8,192
    embedding: PositiveInt = 32
    offrlkit_quirk: bool = True  # COCOA's CQL is OfflineRL-Kit's (logsumexp over 3 values per row)


@dataclass
class IQLConfig(CocoaFields, iql.Config):
    base: Literal["iql"] = "iql"  # the base algorithm (`--agent cocoa --set base=...` picks the variant)
    hidden: Widths = (100, 100)  # backbone widths of actor, critics and V


@dataclass
class MOPOConfig(CocoaFields, mopo.Config):
    base: Literal["mopo"] = "mopo"  # the base algorithm (`--agent cocoa --set base=...` picks the variant)
    hidden: Widths = (100, 100)  # backbone widths of actor and critics


@dataclass
class MOBILEConfig(CocoaFields, mobile.Config):
    base: Literal["mobile"] = "mobile"  # the base algorithm (`--agent cocoa --set base=...` picks the variant)
    hidden: Widths = (100, 100)  # backbone widths of actor and critics
    dynamics_max_epochs: PositiveInt | None = None  # COCOA's stage A model, not run_mobile.py's 30-epoch fit


class Cocoa:
    """The network construction COCOA puts into a base: mixed in before the base's agent class."""

    def build_obs_encoder(self) -> nn.Module:
        c, s = self.config, self.spec
        if c.normalize_obs:
            raise OfflineRLError("cocoa reads raw states (anchors go through the model's own scaler): "
                                 "normalize_obs must be false")
        return AnchorEncoder(s.obs_dim, s.act_dim, DynamicsConfig.from_agent_config(c), c.seeker_hidden,
                             s.action_low, s.action_high, c.horizon)

    def transductive(self, lead, extra_dim: int, out_dim: int, tag: str) -> nn.Module:
        c = self.config
        net = TransductiveNet(lead, self.spec.obs_dim, extra_dim, c.embed_hidden, c.embedding, c.hidden, out_dim)
        return init_seeded(net, self.seeds, tag)

    def build_critic(self) -> EnsembleCritic:
        s, members = self.spec, getattr(self.config, "num_critics", 2)
        return EnsembleCritic(self.seeds, 2 * s.obs_dim, s.act_dim, self.config.hidden, num_members=members,
                              net=self.transductive((self.num_seeds, members), s.act_dim, 1, "critic"))

    def tanh_gaussian_actor(self, log_std_min: float, log_std_max: float) -> TanhGaussianActor:
        s = self.spec
        return TanhGaussianActor(self.seeds, 2 * s.obs_dim, s.act_dim, self.config.hidden, s.action_low,
                                 s.action_high, log_std_min, log_std_max,
                                 net=self.transductive((self.num_seeds,), 0, 2 * s.act_dim, "actor"))

    def seeker_config(self) -> SeekerConfig:
        c = self.config
        reverse = DynamicsConfig.cocoa_reverse(hidden=c.dynamics_hidden, weight_decays=c.dynamics_weight_decays,
                                               seed=c.dynamics_seed, max_epochs=c.reverse_max_epochs)
        return SeekerConfig(reverse=reverse, rollout_starts=c.seeker_rollout_starts,
                            rollout_length=c.seeker_rollout_length, scale_coef=c.seeker_scale,
                            noise_coef=c.seeker_noise, hidden=c.seeker_hidden, max_epochs=c.seeker_max_epochs,
                            patience=c.seeker_patience, seed=c.dynamics_seed)

    def prepare(self, dataset, cache=None):
        super().prepare(dataset, cache)
        log = cache.log if cache is not None else (lambda msg: None)
        device = next(self.parameters()).device
        forward = getattr(self, "dynamics", None)  # a model-based base has just loaded stage A
        if forward is None:
            forward = load_or_fit(dataset, DynamicsConfig.from_agent_config(self.config), cache=cache, log=log,
                                  device=device)
        seeker = load_or_build_seeker(dataset, self.seeker_config(), cache=cache, log=log, device=device)
        self.obs_norm.load(forward, seeker)


class CocoaCQL(Cocoa, cql.CQL):
    def build_actor(self):
        return self.tanh_gaussian_actor(-5.0, 2.0)  # OfflineRL-Kit's TanhDiagGaussian bounds


class CocoaIQL(Cocoa, iql.IQL):
    def build_actor(self):
        s = self.spec
        return GaussianActor(self.seeds, 2 * s.obs_dim, s.act_dim, self.config.hidden, s.action_low, s.action_high,
                             net=self.transductive((self.num_seeds,), 0, s.act_dim, "actor"))

    def build_value(self):
        s = self.spec
        return EnsembleCritic(self.seeds, 2 * s.obs_dim, 0, self.config.hidden, num_members=1, tag="value",
                              net=self.transductive((self.num_seeds, 1), 0, 1, "value"))


class CocoaMOPO(Cocoa, mopo.MOPO):
    def build_actor(self):
        return self.tanh_gaussian_actor(self.config.log_std_min, self.config.log_std_max)


class CocoaMOBILE(Cocoa, mobile.MOBILE):
    def build_actor(self):
        return self.tanh_gaussian_actor(self.config.log_std_min, self.config.log_std_max)


PAPER = "Song, Lee & Kim, ICLR 2024 (arXiv 2404.04682)"
STAGES = ("dynamics", "reverse_dynamics", "anchor_seeker")
VARIANTS = {"cql": (CocoaCQL, CQLConfig, {}), "iql": (CocoaIQL, IQLConfig, {}),
            "mopo": (CocoaMOPO, MOPOConfig, mopo.FAMILY_DEFAULTS), "mobile": (CocoaMOBILE, MOBILEConfig,
                                                                             mobile.FAMILY_DEFAULTS)}
for _base, (_cls, _config, _family) in VARIANTS.items():
    register_agent(f"cocoa-{_base}", _cls, _config, paper=PAPER, base=_base, stages=STAGES, family_defaults=_family,
                   family=f"{_base.upper()} on anchors and differences (compositional conservatism)")
register_variants("cocoa", "base", {b: f"cocoa-{b}" for b in VARIANTS}, default="iql", paper=PAPER, stages=STAGES,
                  family="compositional conservatism on a base")
