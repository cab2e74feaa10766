"""OGSRL (agents/ogsrl.py) on ICU-Sepsis: the empirical model, the guardian, the fixes of the official code's
bugs (each test names its number), the CPO step, and learning."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from offrl.envs import sepsis

pytestmark = pytest.mark.skipif(not sepsis.available(),
                                reason="needs the sepsis extra: pip install 'offrl[sepsis]' (icu-sepsis==2.0.1)")

SIZE = 20_000  # transitions (about 2,200 clinician episodes)


@pytest.fixture(scope="module")
def clinician(data_dir):
    from offrl.data import resolve
    return resolve("offrl:sepsis-clinician", size=SIZE, log=lambda msg: None)


def make(dataset, seeds=(0,), **overrides):
    from offrl import config as cfg
    from offrl import registry
    from offrl.build import build_run
    name = overrides.pop("agent", "ogsrl")
    config = cfg.apply(registry.get(name).config_cls(), overrides)
    return build_run(name, dataset, config, list(seeds), "cpu", "eager", total_steps=10)


def single(dataset, **overrides):
    """The one-seed OGSRL agent itself (runs wrap it in SeedsOneByOne: seed_axis is False)."""
    return make(dataset, **overrides).agent.members[0]


@pytest.fixture(scope="module")
def agent(clinician):
    return single(clinician, bc_init_steps=0, guardian="kde")


def pairs(ds):
    return (ds.observations[:, 0].astype(int), ds.actions[:, 0].astype(int), ds.next_observations[:, 0].astype(int))


def test_empirical_model_matches_the_true_kernel_on_well_covered_pairs(agent, clinician):
    s, a, _ = pairs(clinician)
    count = np.zeros((716, 25), int)
    np.add.at(count, (s, a), 1)
    true = sepsis.load_mdp().transitions
    model = agent.model.numpy()
    covered = count >= 20
    assert covered.sum() >= 50
    tv = 0.5 * np.abs(model[covered] - true[covered]).sum(-1)
    # Next states spread over hundreds of clusters, so even an exact estimator is far from P at N = 20..70;
    # the model's error must be the sampling error of N draws from the true kernel, nothing more (a misaligned
    # or leaked model would be near 1).
    rng = np.random.default_rng(0)
    sampled = np.stack([rng.multinomial(n, p) / n for n, p in zip(count[covered], true[covered])])
    tv_sampling = 0.5 * np.abs(sampled - true[covered]).sum(-1)
    assert abs(tv.mean() - tv_sampling.mean()) < 0.03
    many = count[covered] >= 40
    assert tv[many].mean() < tv[~many].mean()  # the error shrinks with coverage
    # The outcome probabilities, a coarse statistic, are close on every covered pair.
    ends = [sepsis.DEATH, sepsis.SURVIVAL]
    assert np.abs(model[covered][:, ends].sum(-1) - true[covered][:, ends].sum(-1)).mean() < 0.05


def test_kde_guardian_marks_about_the_chosen_quantile_of_training_rows(agent, clinician):
    s, a, _ = pairs(clinician)
    outside = ~agent.support.numpy()[s, a]
    assert 0.03 < outside.mean() <= 0.05 + 0.02  # ties: every row of one (s, a) pair has one density
    count = single(clinician, guardian="count", min_count=20, bc_init_steps=0)
    n = np.zeros((716, 25))
    np.add.at(n, (s, a), 1)
    assert (count.support.numpy() == (n >= 20)).all()


def test_bug1_one_action_order_fluid_then_vaso(agent):
    # The env's index is 5·fluid + vaso; the guardian's KDE reads the levels (a // 5, a % 5) in that order, so a
    # pair's support must not change if the two levels of the dataset's actions are read the other way.
    levels = np.stack(np.divmod(np.arange(25), 5), 1)
    assert (levels[7] == (1, 2)).all() and (levels[5 * 3 + 4] == (3, 4)).all()
    # The model's unseen-action fallback is nearest in those levels: a seen neighbour of the same state.
    seen = agent.model.sum(-1).numpy() > 0
    assert seen[agent.known.numpy()].all()


def test_bug2_rewards_ends_and_costs_are_indexed_by_pair_and_state(agent, clinician):
    s, a, s2 = pairs(clinician)
    reward, outcome, cost = agent.reward.numpy(), agent.outcome.numpy(), agent.cost.numpy()
    assert set(np.flatnonzero(outcome)) == set(s2[clinician.terminals])
    assert reward[sepsis.SURVIVAL] == 1.0 and reward[sepsis.DEATH] == 0.0
    assert np.allclose(cost[s2], clinician.extras["infos/cost"])


def test_bug3_model_and_guardian_come_from_the_training_data_only(agent, clinician):
    s, a, s2 = pairs(clinician)
    counts = np.zeros((716, 25, 716))
    np.add.at(counts, (s, a, s2), 1)
    seen = counts.sum(-1) > 0
    assert np.allclose(agent.model.numpy()[seen], (counts / np.maximum(counts.sum(-1, keepdims=True), 1))[seen])
    assert not agent.support.numpy()[~agent.known.numpy()].any()  # no support where the data never was


def test_bug4_costs_are_non_negative_and_the_constraint_acts_when_violated(clinician):
    # The KDE guardian: with the count one a random first policy leaves it at once on this small dataset.
    strict = single(clinician, cost_limit=0.0, bc_init_steps=0, guardian="kde")
    out = strict.update(None, 1)
    assert (strict.cost >= 0).all()
    assert out["model_cost"].item() > 0 and out["recovering"].item() == 1.0  # J_c > d = 0: recovery step
    loose = single(clinician, cost_limit=100.0, bc_init_steps=0, guardian="kde")
    assert loose.update(None, 1)["recovering"].item() == 0.0


def test_bug5_evaluation_is_exact_policy_evaluation_in_the_true_mdp(agent, clinician):
    from offrl.evaluation import Evaluator
    ev = Evaluator(clinician, 1, 1)
    try:
        metrics = ev.policy_metrics(agent)
    finally:
        ev.close()
    greedy = agent.act(torch.arange(716.0).reshape(1, 716, 1))[..., 0].long().numpy()
    exact = sepsis.policy_values(greedy)
    assert metrics["true_survival"][0] == pytest.approx(float(exact["survival"][0]))
    assert metrics["inadmissible_rate"][0] == pytest.approx(float(exact["inadmissible_rate"][0]))
    assert 0 <= metrics["guardian_ood_rate"][0] <= 1 and 0 < metrics["model_survival"][0] <= 1


def test_bug6_and_7_rollouts_use_the_precomputed_guardian_and_store_the_pair_before_moving(agent):
    roll = agent.rollout()
    s, a, acted, leaves = roll["state"], roll["action"], roll["acted"], roll["leaves"]
    assert (leaves == (acted & ~agent.support[s, a])).all()
    # (s_t, a_t) -> s_{t+1}: every in-guardian move is a transition the model has.
    moved = (acted & ~leaves & ~roll["done"])[..., :-1]
    p = agent.model[s[..., :-1], a[..., :-1], s[..., 1:]]
    assert moved.any() and (p[moved] > 0).all()
    assert (s[..., 0, None] == agent.starts).any(-1).all()  # the first stored state is a start state
    assert (s[..., :-1] != s[..., 1:])[moved].float().mean() > 0.5  # not s_{t+1} stored twice


def test_bug8_gae_stays_inside_each_rollout(agent):
    H = 5
    rewards = torch.zeros(1, 2, H)
    rewards[0, 0, -1] = 1.0  # rollout 0 ends with a reward; rollout 1 has none
    live = torch.ones(1, 2, H, dtype=torch.bool)
    done = torch.zeros(1, 2, H, dtype=torch.bool)
    done[0, 1, 2] = True
    live[0, 1, 3:] = False
    adv, _ = agent.gae(rewards, torch.zeros(1, 2, H), live, done)
    assert (adv[0, 1] == 0).all()
    assert (adv[0, 0] > 0).all()
    rewards[0, 1, 4] = 5.0  # after rollout 1's end: ignored
    assert (agent.gae(rewards, torch.zeros(1, 2, H), live, done)[0][0, 1] == 0).all()


def test_bug9_frozen_steps_do_not_enter_the_surrogate(agent):
    roll = agent.rollout()
    frozen_steps = roll["live"] & ~roll["acted"]
    assert frozen_steps.any()  # a near-uniform policy leaves the guardian often
    params = dict(agent.policy.named_parameters())
    with torch.no_grad():
        probs = torch.softmax(agent.logits(roll["state"]), -1)
        logp = torch.log(probs).gather(-1, roll["action"].unsqueeze(-1))[..., 0]
        adv = torch.randn_like(logp)
        base = agent.surrogates(params, roll, logp, adv, adv, roll["acted"].float(), probs)
        roll2 = dict(roll, action=torch.where(frozen_steps, (roll["action"] + 1) % 25, roll["action"]))
        other = agent.surrogates(params, roll2, logp, adv, adv, roll["acted"].float(), probs)
    for x, y in zip(base, other):
        assert torch.allclose(x, y)


def test_bug10_outcomes_end_rollouts_with_the_survival_reward(agent):
    roll = agent.rollout()
    ended = roll["done"] & roll["live"]
    assert ended.any()
    after = torch.cumsum(roll["done"].int(), -1) - roll["done"].int() > 0  # steps after an outcome
    assert not roll["live"][after].any() and (roll["reward"][after] == 0).all()
    moved_in = roll["reward"][ended & roll["acted"]]
    assert set(moved_in.unique().tolist()) <= {0.0, 1.0}


def test_cpo_step_respects_the_trust_region_and_the_linearised_cost():
    from offrl.agents.ogsrl import OGSRL, Config
    from offrl.data.dataset import DatasetSpec
    agent = OGSRL(DatasetSpec(1, 1, (0.0,), (24.0,), 716, 25), Config(), [0])
    gen = torch.Generator().manual_seed(0)
    P, delta = 6, Config().max_kl
    for trial in range(200):
        root = torch.randn(P, P, generator=gen)
        F = root @ root.T / P + 0.1 * torch.eye(P)
        g, b = torch.randn(1, P, generator=gen), torch.randn(1, P, generator=gen)
        c = torch.randn(1, generator=gen) * 0.05
        c = -c.abs() if trial < 40 else c  # the random search needs a feasible region to sample
        x, y = torch.linalg.solve(F, g[0])[None], torch.linalg.solve(F, b[0])[None]
        step, recovering = agent.cpo_direction(g, b, x, y, c)
        assert 0.5 * (step @ F @ step.T).item() <= delta * (1 + 1e-4)  # inside the trust region
        if recovering.item():
            assert (b * step).sum().item() < 0  # infeasible: the step only lowers the cost
            continue
        assert c.item() + (b * step).sum().item() <= 1e-5  # the linearised constraint holds after the step
        if trial < 40:  # and no feasible direction in the trust region does better (random search)
            d = torch.randn(4000, P, generator=gen)
            d = d * torch.sqrt(2 * delta / ((d @ F) * d).sum(-1, keepdim=True)) * torch.rand(4000, 1, generator=gen)
            feasible = (c + d @ b[0] <= 0)
            assert feasible.any()
            assert (d[feasible] @ g[0]).max().item() <= (g * step).sum().item() + 1e-4


def test_accepted_steps_keep_the_kl_inside_the_trust_region(clinician):
    agent = single(clinician, bc_init_steps=0)
    for step in range(1, 4):
        roll_state = agent.starts[:50].reshape(1, -1)
        before = torch.softmax(agent.logits(roll_state), -1)
        out = agent.update(None, step)
        assert out["kl"].item() <= agent.config.max_kl
        assert out["step_taken"].item() == 1.0
    after = torch.softmax(agent.logits(roll_state), -1)
    assert not torch.allclose(before, after)


def test_ogsrl_beats_the_clinicians_and_stays_supported(clinician):
    from offrl.evaluation import Evaluator
    # The KDE guardian: on 20,000 transitions (a ninth of the recipe's) few pairs reach the count rule's 20.
    parts = make(clinician, seeds=(0, 1), guardian="kde")
    ev = Evaluator(clinician, 2, 1)
    start = ev.policy_metrics(parts.agent)
    for step in range(1, 31):
        parts.train_step(step)
    end = ev.policy_metrics(parts.agent)
    ev.close()
    clinician_survival = float(sepsis.policy_values(sepsis.load_mdp().clinician)["survival"])
    assert min(end["true_survival"]) > clinician_survival
    assert max(end["inadmissible_rate"]) <= 0.15
    assert np.mean(end["model_survival"]) > np.mean(start["model_survival"])  # CPO improved its own objective
