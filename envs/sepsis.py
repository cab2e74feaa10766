"""ICU-Sepsis: the tabular sepsis-treatment MDP of the `icu-sepsis` package, as offrl's own environment.

The package (extra `offrl[sepsis]`, pinned to icu-sepsis 2.0.1) ships an MDP estimated from MIMIC-III with the
AI-Clinician pipeline and no patient data: 716 states (713 patient clusters, then death, survival and an
absorbing s_inf), 25 actions (index = 5·fluid level + vasopressor level), reward 1 on entering survival, γ = 1,
episodes capped at 500 steps, the clinicians' estimated policy, and per state the 47-feature centroid, the mean
SOFA and the admissible actions (seen at least 20 times in MIMIC). Importing `icu_sepsis` needs the legacy `gym`
package, so offrl reads the shipped files directly (`load_mdp`) and reimplements the semantics: an
inadmissible action moves by the shipped row, which is the mean of the admissible actions' rows ("mean", the
default), or leads to death ("terminate"). `SepsisEnv` makes the package's random draws in the package's
order, so both give the same episodes on the same seeds (tests/test_sepsis.py).

Everything is exact: `policy_values` evaluates any (stochastic) policy table by forward occupancies over the
500-step horizon, giving true survival, survival under "terminate", the visit-weighted rate of inadmissible
actions and the mean cost per step. Reference scores are the uniform-random and optimal (value iteration)
survival, so a normalised score of 100 is the optimum of the true MDP.

Datasets (`sepsis-<level>`): episodes of the clinician policy (`clinician`), or of the clinician with an
ε-share of uniformly random actions (`mixed`: ε = 0.3), sampled by a vectorised tabular simulator. Each step
records the extras `infos/state` (state index), `infos/sofa`, `infos/features` (OGSRL's 13 state features
of the centroid), `infos/admissible` (the action is admissible) and `infos/cost`. The cost is a proxy for OGSRL's physiological bounds (raw SpO2 and urine output are not
available, only z-scored centroids): one unit each when the next state's SpO2 or 4-hourly urine output
centroid lies in the lowest decile of the patient states'.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from offrl.data.recipes import collect_transitions
from offrl.errors import OfflineRLError

ENV_ID = "offrl/ICUSepsis-v2"
PACKAGE = "icu-sepsis"
PINNED = "2.0.1"
N_STATES, N_ACTIONS = 716, 25
DEATH, SURVIVAL, S_INF = 713, 714, 715
PATIENT_STATES = 713  # states 0..712 are patients; the rest are terminal
MAX_STEPS = 500
# Columns of the 47-feature centroids (the package's order).
SOFA_COLUMN, SPO2_COLUMN, URINE_4H_COLUMN = 31, 36, 46
# OGSRL's 13 state features among the 47 (gender, re_admission, age, mechvent, GCS, FiO2, paO2, PaO2/FiO2,
# total bilirubin, 4-hourly and total urine output, total input, SpO2): the guardian's KDE reads them.
OGSRL_COLUMNS = (0, 3, 4, 1, 6, 13, 26, 34, 41, 46, 45, 43, 36)
COST_QUANTILE = 0.1  # a centroid below this quantile of the patient states' violates the bound
STRATEGIES = ("mean", "terminate")
LEVELS = {"clinician": 0.0, "mixed": 0.3}  # level -> share of uniformly random actions


@dataclass(frozen=True)
class SepsisMDP:
    transitions: np.ndarray  # [716, 25, 716] P(s' | s, a) (inadmissible rows hold the admissible mean)
    rewards: np.ndarray  # [716, 25, 716] r(s, a, s')
    initial: np.ndarray  # [716]
    clinician: np.ndarray  # [716, 25] the estimated clinician policy (zero rows at terminal states)
    centroids: np.ndarray  # [716, 47]
    sofa: np.ndarray  # [716]
    admissible: np.ndarray  # [716, 25] bool
    state_cost: np.ndarray  # [716] cost of entering a state (0 for terminal states)

    def kernel(self, strategy: str = "mean") -> np.ndarray:
        """P under an inadmissible-action strategy: "mean" as shipped, "terminate" sends them to death."""
        if strategy not in STRATEGIES:
            raise OfflineRLError(f"inadmissible-action strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if strategy == "mean":
            return self.transitions
        death = np.zeros(N_STATES)
        death[DEATH] = 1.0
        return np.where(self.admissible[..., None], self.transitions, death)

    def expected_rewards(self) -> np.ndarray:
        """[716, 25] E[r | s, a] under the shipped kernel."""
        return np.einsum("sat,sat->sa", self.transitions, self.rewards)


def _asset(name: str):
    from importlib import metadata
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise OfflineRLError(f"ICU-Sepsis needs the sepsis extra: pip install 'offrl[sepsis]' "
                             f"({PACKAGE}=={PINNED})") from None
    if dist.version != PINNED:
        raise OfflineRLError(f"offrl reads the files of {PACKAGE}=={PINNED}, found {dist.version}: "
                             f"pip install '{PACKAGE}=={PINNED}'")
    return dist.locate_file(f"icu_sepsis/envs/assets/{name}")


def available() -> bool:
    from importlib import metadata
    try:
        return metadata.distribution(PACKAGE).version == PINNED
    except metadata.PackageNotFoundError:
        return False


@functools.lru_cache(maxsize=1)
def load_mdp() -> SepsisMDP:
    """The shipped MDP, read from the installed package's files (no `import icu_sepsis`)."""
    data = np.load(_asset("dynamics.npz"))
    lines = _asset("admissible_actions.txt").read_text().splitlines()
    counts = [int(n) for n in lines[0].split()]
    admissible = np.zeros((N_STATES, N_ACTIONS), bool)
    for s, (n, line) in enumerate(zip(counts, lines[1:])):
        actions = [int(a) for a in line.split()]
        assert len(actions) == n
        admissible[s, actions] = True
    centroids = data["state_cluster_centers"]
    cost = np.zeros(N_STATES)
    for column in (SPO2_COLUMN, URINE_4H_COLUMN):
        values = centroids[:PATIENT_STATES, column]
        cost[:PATIENT_STATES] += values <= np.quantile(values, COST_QUANTILE)
    arrays = dict(transitions=data["tx_mat"], rewards=data["r_mat"], initial=data["d_0"],
                  clinician=data["expert_policy"], centroids=centroids, sofa=data["sofa_scores"],
                  admissible=admissible, state_cost=cost)
    for value in arrays.values():
        value.flags.writeable = False
    return SepsisMDP(**arrays)


# ------------------------------------------------------------------------------------------ exact evaluation

def as_policy_table(policy: np.ndarray) -> np.ndarray:
    """[..., 716, 25] probabilities from probabilities or from action indices [..., 716]."""
    policy = np.asarray(policy)
    if policy.shape[-1] == N_ACTIONS and policy.ndim >= 2 and policy.dtype.kind == "f":
        return policy.astype(np.float64)
    return np.eye(N_ACTIONS)[policy.astype(np.int64)]


def policy_values(policy: np.ndarray, mdp: SepsisMDP | None = None, horizon: int = MAX_STEPS) -> dict:
    """Exact statistics of policies [..., 716, 25] (or action indices [..., 716]) over the horizon, as arrays
    of the leading shape: survival, survival_terminate, inadmissible_rate (inadmissible actions per treatment
    step, visit-weighted), mean_cost (cost per treatment step) and episode_length (expected steps)."""
    mdp = mdp or load_mdp()
    pi = as_policy_table(policy)
    lead = pi.shape[:-2]
    pi = pi.reshape(-1, N_STATES, N_ACTIONS)[:, :PATIENT_STATES]
    out = {}
    for strategy in STRATEGIES:
        P = mdp.kernel(strategy)[:PATIENT_STATES]  # [713, 25, 716]
        P_pi = np.einsum("nsa,sat->nst", pi, P)  # [n, 713, 716]
        mu = np.broadcast_to(mdp.initial[:PATIENT_STATES], (len(pi), PATIENT_STATES)).copy()
        visits = np.zeros_like(mu)
        survival = np.zeros(len(pi))
        for _ in range(horizon):
            if mu.sum(1).max() < 1e-12:  # every episode has ended: the rest of the horizon adds nothing
                break
            visits += mu
            nxt = np.einsum("ns,nst->nt", mu, P_pi)
            survival += nxt[:, SURVIVAL]
            mu = nxt[:, :PATIENT_STATES]
        if strategy == "mean":
            steps = visits.sum(1)
            inadmissible = np.einsum("ns,nsa->n", visits, pi * ~mdp.admissible[:PATIENT_STATES])
            cost = np.einsum("ns,nst,t->n", visits, P_pi, mdp.state_cost)
            out.update(survival=survival, inadmissible_rate=inadmissible / steps, mean_cost=cost / steps,
                       episode_length=steps)
        else:
            out["survival_terminate"] = survival
    return {k: v.reshape(lead) for k, v in out.items()}


def optimal_policy(mdp: SepsisMDP | None = None, iterations: int = 2000) -> np.ndarray:
    """Greedy actions [716] of value iteration on survival (γ = 1; episodes end in a few steps, so it converges)."""
    mdp = mdp or load_mdp()
    r = mdp.expected_rewards()
    v = np.zeros(N_STATES)
    for _ in range(iterations):
        q = r + mdp.transitions @ v
        q[PATIENT_STATES:] = 0.0
        v_new = q.max(1)
        if np.abs(v_new - v).max() < 1e-12:
            break
        v = v_new
    return q.argmax(1)


def uniform_policy() -> np.ndarray:
    return np.full((N_STATES, N_ACTIONS), 1.0 / N_ACTIONS)


@functools.lru_cache(maxsize=1)
def reference_returns() -> tuple[float, float]:
    """(uniform-random survival, optimal survival), exact."""
    return (float(policy_values(uniform_policy())["survival"]), float(policy_values(optimal_policy())["survival"]))


def policy_metrics(actions: np.ndarray) -> dict[str, np.ndarray]:
    """The result columns of policies given as action indices or probabilities per state ([S, 716(, 25)]):
    exact true survival, survival under "terminate", inadmissible-action rate and mean cost per step; and
    the exact expected return (the survival), which the trainer scores instead of the sampled episodes'."""
    values = policy_values(actions)
    return {"expected_return": values["survival"],
            "true_survival": values["survival"], "survival_terminate": values["survival_terminate"],
            "inadmissible_rate": values["inadmissible_rate"], "mean_cost": values["mean_cost"]}


# ------------------------------------------------------------------------------------------ the environment

class SepsisEnv(gym.Env):
    """One ICU-Sepsis patient: observations are state indices (Discrete(716)), actions Discrete(25).

    Draws `np_random.choice(716, p=...)` at reset and at every step, as the package does, so the same seed
    gives the same episode as `gymnasium.make('Sepsis/ICU-Sepsis-v2')`. `info` holds the package's
    state_vector and sofa_score, and the admissible actions as a [25] mask (the package's list has a
    length per state, which vector envs cannot stack)."""
    metadata = {"render_modes": []}

    def __init__(self, inadmissible_action_strategy: str = "mean"):
        if inadmissible_action_strategy not in STRATEGIES:
            raise OfflineRLError(f"inadmissible_action_strategy must be one of {', '.join(STRATEGIES)}, "
                                 f"got {inadmissible_action_strategy!r}")
        self.mdp = load_mdp()
        self.strategy = inadmissible_action_strategy
        self.observation_space = gym.spaces.Discrete(N_STATES)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        self.state = 0

    def _info(self) -> dict:
        return {"admissible": self.mdp.admissible[self.state].copy(),
                "state_vector": self.mdp.centroids[self.state].copy(), "sofa_score": self.mdp.sofa[self.state]}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = int(self.np_random.choice(N_STATES, p=self.mdp.initial))
        return self.state, self._info()

    def step(self, action):
        a, s = int(action), self.state
        if self.mdp.admissible[s, a] or self.strategy == "mean":
            self.state = int(self.np_random.choice(N_STATES, p=self.mdp.transitions[s, a]))
        else:
            self.state = DEATH
        reward = float(self.mdp.rewards[s, a, self.state])
        return self.state, reward, self.state >= PATIENT_STATES, False, self._info()


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="offrl.envs.sepsis:SepsisEnv", max_episode_steps=MAX_STEPS)


# ------------------------------------------------------------------------------------------ datasets

def _sample(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One index per row of probs [n, k] (inverse CDF)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(1), probs.shape[1] - 1)


def behaviour_policy(level: str, mdp: SepsisMDP) -> np.ndarray:
    eps = LEVELS[level]
    clinician = mdp.clinician.copy()
    clinician[PATIENT_STATES:] = 1.0 / N_ACTIONS  # never used: episodes end there
    return (1 - eps) * clinician + eps / N_ACTIONS


def simulate(rng: np.random.Generator, policy: np.ndarray, episodes: int, mdp: SepsisMDP | None = None) -> list[dict]:
    """`episodes` episodes of `policy` [716, 25], all stepped together, as Minari-style episode dicts with the
    per-step extras under "infos"."""
    mdp = mdp or load_mdp()
    s = _sample(rng, np.broadcast_to(mdp.initial, (episodes, N_STATES)))
    states, actions, alive = [s], [], np.ones(episodes, bool)
    length = np.full(episodes, MAX_STEPS)
    for t in range(MAX_STEPS):
        a = _sample(rng, policy[s])
        nxt = _sample(rng, mdp.transitions[s, a])
        nxt = np.where(alive, nxt, s)
        actions.append(a)
        states.append(nxt)
        done = alive & (nxt >= PATIENT_STATES)
        length[done] = t + 1
        alive &= ~done
        s = nxt
        if not alive.any():
            break
    S, A = np.stack(states, 1), np.stack(actions, 1)
    out = []
    for i in range(episodes):
        T = int(length[i])
        obs, act = S[i, :T + 1], A[i, :T]
        term = np.zeros(T, bool)
        term[-1] = obs[-1] >= PATIENT_STATES
        trunc = np.zeros(T, bool)
        trunc[-1] = not term[-1]
        out.append(dict(observations=obs, actions=act, rewards=mdp.rewards[obs[:-1], act, obs[1:]],
                        terminations=term, truncations=trunc,
                        infos={"state": obs[:-1], "sofa": mdp.sofa[obs[:-1]],
                               "features": mdp.centroids[obs[:-1]][:, OGSRL_COLUMNS].astype(np.float32),
                               "admissible": mdp.admissible[obs[:-1], act],
                               "cost": mdp.state_cost[obs[1:]]}))
    return out


def build_episodes(level: str, transitions: int, seed: int) -> list[dict]:
    """Episodes of the level's behaviour policy until `transitions` steps; the last one is cut (truncated)."""
    mdp = load_mdp()
    rng = np.random.default_rng(seed)
    policy = behaviour_policy(level, mdp)
    # Episodes last about 9 steps: batches sized to the budget left, at most 20,000 episodes.
    return collect_transitions(
        lambda total: simulate(rng, policy, max(1, min(20_000, (transitions - total) // 9 + 1)), mdp), transitions)
