"""Behaviour policies for the MuJoCo recipes: trained here with stable-baselines3, shipped as small files.

`train_behaviour` trains PPO (Hopper, Walker2d, HalfCheetah) or SAC (Ant, where PPO measured unstable; D4RL
itself used SAC) on one Gymnasium MuJoCo v5 env (fixed seed, one torch thread, one env in a DummyVecEnv,
VecNormalize where the settings use it), saves a policy snapshot every `snapshot_every` env
steps, evaluates each (10 episodes with fixed seeds, with the mean action and with sampled actions) and writes to envs/policies/<family>/:

    expert.pt              the snapshot with the best evaluation return (a fully trained policy)
    medium.pt              the snapshot before the expert whose behaviour return (stochastic actions, as in
                           the datasets) is closest to a third of the expert's (see `pick`)
    replay_00.pt ...       up to 11 snapshots from the start of training up to the medium one (medium-replay)
    behaviour.json         env, versions, settings, every snapshot's return, the picks, sha256 of each file,
                           the reference returns (uniform-random and expert, 100 episodes), wall-clock

A policy file holds only what inference needs, as plain tensors in a dict (see `extract_policy`): the policy
MLP, the action head, the log std (PPO: a state-independent vector; SAC: a linear head, clamped as SB3 does)
and the observation normaliser's statistics. `BehaviourPolicy` loads one and acts on a batch of observations
in float64 with arithmetic that gives the same bits on every CPU (see `portable_affine`): the mean action, or a Gaussian sample drawn from a numpy Generator the caller seeds; PPO's is
clipped to the action box (SB3 clips the same way when it acts in an env), SAC's goes through tanh and is
scaled to the box. D4RL collected its data with the stochastic policy, and so do the recipes.

Training is resumable: the SB3 model, the normaliser (SAC: the replay buffer) and the snapshots so far are
checkpointed under
<offrl data dir>/cache/behaviour/<family>-seed<seed>/ after every snapshot, and a later call with the same
env and seed continues from there (bit-for-bit reproducibility then holds per uninterrupted stretch only).
"""
from __future__ import annotations

import json
import math
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from offrl.atomic import atomic_path, file_sha256, write_text_atomic
from offrl.envs.rollout import run_episodes

# torch is imported where it is used: importing offrl.envs (to list the recipes) stays quick.

POLICY_FORMAT = "offrl-behaviour-policy/1"
POLICIES_DIR = Path(__file__).resolve().parent / "policies"

FAMILIES = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5", "ant": "Ant-v5"}

EVAL_EPISODES = 10
EVAL_SEED = 1_000_000  # evaluation episode k starts from env seed EVAL_SEED + k
REFERENCE_EPISODES = 100
REFERENCE_SEED = 2_000_000
MAX_REPLAY = 11  # replay_00 ... replay_10

# SB3's PPO defaults, written out so that behaviour.json records every value that produced a policy.
SB3_DEFAULTS = dict(learning_rate=3e-4, n_steps=2048, batch_size=64, n_epochs=10, gamma=0.99, gae_lambda=0.95,
                    clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5,
                    policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn="tanh",
                                       log_std_init=0.0, ortho_init=True))

RLZOO_HALFCHEETAH = dict(learning_rate=2.0633e-05, n_steps=512, batch_size=64, n_epochs=20, gamma=0.98,
                         gae_lambda=0.92, clip_range=0.1, ent_coef=0.000401762, vf_coef=0.58096, max_grad_norm=0.8,
                         policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[256, 256]), activation_fn="relu",
                                            log_std_init=-2.0, ortho_init=False))

SAC_RLZOO = dict(learning_rate=3e-4, buffer_size=300_000, learning_starts=10_000, batch_size=256, tau=0.005,
                 gamma=0.99, train_freq=1, gradient_steps=1, ent_coef="auto",
                 policy_kwargs=dict(net_arch=dict(pi=[128, 128], qf=[256, 256]), activation_fn="relu"))

# Per env: PPO or SAC keyword arguments, whether observations/rewards go through VecNormalize, and the default
# step budget. Hopper: SB3 defaults, measured to reach ~3,100-3,300 in 400-500k steps at ~1,150 steps/s.
# The others: see the comments.
SETTINGS: dict[str, dict] = {
    "Hopper-v5": dict(ppo=SB3_DEFAULTS, normalize=False, steps=600_000),
    # PPO's classic MuJoCo setting (the defaults above, with observation and reward normalisation).
    "Walker2d-v5": dict(ppo=SB3_DEFAULTS, normalize=True, steps=750_000),
    # RL-Zoo's tuned HalfCheetah values (hyperparams/ppo.yml), with a 64x64 policy so the files stay small.
    # 1M steps (RL-Zoo's budget): the first policies stopped at 300k, still climbing (3,569), and TD3+BC then
    # scored 91 on their medium data after 20k updates -- an expert that offline RL beats is not "fully trained".
    "HalfCheetah-v5": dict(ppo=RLZOO_HALFCHEETAH, normalize=True, steps=1_000_000),
    # PPO did not learn Ant-v5 here: SB3's defaults + VecNormalize (RL-Zoo's entry) swung between 10 and 480
    # and the tuned HalfCheetah values stayed at the ~1,000 a standing ant earns
    # in 400k steps. SAC, as D4RL used, with RL-Zoo's MuJoCo values (10k random steps first, else SB3's
    # defaults; a 300k-transition FIFO buffer); a 128x128 actor keeps the shipped files small, the critics
    # keep SAC's 256x256. 1M steps, D4RL's "fully trained" budget: at 300k the deterministic evaluation was
    # still climbing (225k: 1,441, 250k: 984, 275k: 1,292, 300k: 1,771; a standing ant earns ~1,000).
    # About 35 env steps/s on one core of a 2-core VM, so the run spans sittings (it resumes).
    "Ant-v5": dict(sac=SAC_RLZOO, normalize=False, steps=1_000_000),
}


def env_id_of(env_name: str) -> str:
    """'hopper' or 'Hopper-v5' -> 'Hopper-v5'."""
    if env_name in FAMILIES:
        return FAMILIES[env_name]
    for env_id in FAMILIES.values():
        if env_name.lower() == env_id.lower():
            return env_id
    raise KeyError(f"unknown MuJoCo env {env_name!r}: use one of {', '.join(FAMILIES)} or {', '.join(FAMILIES.values())}")


def family_of(env_name: str) -> str:
    env_id = env_id_of(env_name)
    return next(f for f, e in FAMILIES.items() if e == env_id)


def policy_dir(env_name: str) -> Path:
    return POLICIES_DIR / family_of(env_name)


def versions() -> dict:
    import torch
    import gymnasium
    import mujoco
    import stable_baselines3

    return dict(stable_baselines3=stable_baselines3.__version__, gymnasium=gymnasium.__version__,
                mujoco=mujoco.__version__, torch=torch.__version__, numpy=np.__version__,
                python=platform.python_version())


# ---------------------------------------------------------------------------------------------------------
# The shipped policy
# ---------------------------------------------------------------------------------------------------------
# The recipes promise the same dataset, bit for bit, on any machine: a run that moves rebuilds its dataset and
# resumes only on identical data (its fingerprint). The policy acts at every step and MuJoCo's dynamics are
# chaotic, so one ulp of difference in an action changes the rest of the episode. Kernels that choose their code
# by the CPU they run on break that: torch's float32 linear (MKL's sgemm gives other bits with AVX-512, AVX2 or
# SSE4.2), numpy's tanh / exp / log1p (their SIMD versions differ between AVX-512, AVX2 and the baseline), BLAS
# dot products. Measured on one machine: MKL's AVX2 path alone changed halfcheetah-medium's fingerprint and its
# behaviour return (1592.7 -> 1580.8). So the forward pass uses only IEEE-754 multiplies and adds in a fixed order
# (exactly rounded, the same on every CPU) and the C library's scalar tanh and exp.
_scalar_tanh, _scalar_exp = np.frompyfunc(math.tanh, 1, 1), np.frompyfunc(math.exp, 1, 1)


def portable_affine(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x @ w.T + b for float64 x [n, in], w [out, in], b [out], summed over `in` in index order."""
    out = np.repeat(b[None, :], len(x), axis=0)
    for j in range(w.shape[1]):
        out += x[:, j, None] * w[None, :, j]
    return out


def portable_tanh(x: np.ndarray) -> np.ndarray:
    return _scalar_tanh(x).astype(np.float64)


def portable_exp(x: np.ndarray) -> np.ndarray:
    return _scalar_exp(x).astype(np.float64)


class BehaviourPolicy:
    """A Gaussian policy as SB3 acts with it in the env: normalise obs, MLP, mean action, + exp(log_std) noise;
    then PPO clips to the box, SAC squashes with tanh and scales to the box (`squash`)."""

    def __init__(self, state: dict):
        if state.get("format") != POLICY_FORMAT:
            raise ValueError(f"not an offrl behaviour policy (format {state.get('format')!r})")
        self.state = state
        self.env_id = state["env_id"]
        self.step = int(state["step"])
        # float64 copies (not views: pickling the policy to a worker process would move the tensors under a view)
        f64 = lambda t: t.double().numpy().copy()  # noqa: E731
        self.hidden = [(f64(state[f"pi.{i}.weight"]), f64(state[f"pi.{i}.bias"]))
                       for i in range(int(state["n_hidden"]))]
        self.mu = (f64(state["mu.weight"]), f64(state["mu.bias"]))
        self.activation = {"tanh": portable_tanh, "relu": lambda x: np.maximum(x, 0.0)}[state["activation"]]
        self.squash = bool(state.get("squash", False))
        if self.squash:  # SAC: log std from its own linear head on the last hidden layer
            self.log_std_head = (f64(state["log_std.weight"]), f64(state["log_std.bias"]))
            self.log_std_range = (float(state["log_std_min"]), float(state["log_std_max"]))
        else:  # PPO: one learned vector
            self.std = portable_exp(f64(state["log_std"]))
        self.obs_mean = None if state["obs_mean"] is None else f64(state["obs_mean"])
        self.obs_scale = None if state["obs_var"] is None else np.sqrt(f64(state["obs_var"]) + float(state["obs_eps"]))
        self.obs_clip = float(state["obs_clip"])
        self.low, self.high = f64(state["action_low"]), f64(state["action_high"])
        self.obs_dim = self.hidden[0][0].shape[1]
        self.act_dim = self.mu[0].shape[0]

    @classmethod
    def load(cls, path) -> "BehaviourPolicy":
        import torch
        return cls(torch.load(path, map_location="cpu", weights_only=True))

    def _gaussian(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of the pre-clip / pre-tanh Gaussian, [n, act_dim] each, for observations [n, obs_dim]."""
        obs = np.asarray(obs, np.float64)
        if self.obs_mean is not None:
            obs = np.clip((obs - self.obs_mean) / self.obs_scale, -self.obs_clip, self.obs_clip)
        x = obs
        for w, b in self.hidden:
            x = self.activation(portable_affine(x, w, b))
        mu = portable_affine(x, *self.mu)
        if not self.squash:
            return mu, np.broadcast_to(self.std, mu.shape)
        log_std = np.clip(portable_affine(x, *self.log_std_head), *self.log_std_range)
        return mu, portable_exp(log_std)

    def _to_box(self, a: np.ndarray) -> np.ndarray:
        if self.squash:  # tanh into [-1, 1], then SB3's affine map onto the box
            a = self.low + 0.5 * (portable_tanh(a) + 1.0) * (self.high - self.low)
        return np.clip(a, self.low, self.high).astype(np.float32)

    def mean(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic actions [n, act_dim] for observations [n, obs_dim] (PPO's before clipping)."""
        mu, _ = self._gaussian(obs)
        return self._to_box(mu) if self.squash else mu

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None, deterministic: bool = False) -> np.ndarray:
        """Actions [n, act_dim] in the action box: the mean if deterministic, else a sample drawn with `rng`."""
        mu, std = self._gaussian(obs)
        if not deterministic:
            mu = mu + std * rng.standard_normal(mu.shape)
        return self._to_box(mu)

    __call__ = act


class UniformPolicy:
    """Uniform random actions in the box, drawn with the caller's Generator (the `random` level)."""

    def __init__(self, low: np.ndarray, high: np.ndarray):
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)

    def act(self, obs, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=(len(obs), len(self.low))).astype(np.float32)

    __call__ = act


def extract_policy(model, vecnorm, env_id: str, step: int) -> dict:
    """What inference needs from an SB3 PPO or SAC model (and its VecNormalize), as plain tensors."""
    import torch
    from stable_baselines3 import SAC
    tensor = lambda t: t.detach().clone().float()  # noqa: E731
    sac = isinstance(model, SAC)
    if sac:
        actor = model.actor
        linears = [m for m in actor.latent_pi if isinstance(m, torch.nn.Linear)]
        act_fn, mu_head = actor.activation_fn, actor.mu
    else:
        pol = model.policy
        linears = [m for m in pol.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
        act_fn, mu_head = pol.activation_fn, pol.action_net
    act_name = {torch.nn.Tanh: "tanh", torch.nn.ReLU: "relu"}[act_fn]
    state = {"format": POLICY_FORMAT, "env_id": env_id, "step": int(step), "activation": act_name,
             "n_hidden": len(linears), "squash": sac}
    for i, lin in enumerate(linears):
        state[f"pi.{i}.weight"], state[f"pi.{i}.bias"] = tensor(lin.weight), tensor(lin.bias)
    state["mu.weight"], state["mu.bias"] = tensor(mu_head.weight), tensor(mu_head.bias)
    if sac:
        from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN
        state["log_std.weight"], state["log_std.bias"] = tensor(actor.log_std.weight), tensor(actor.log_std.bias)
        state["log_std_min"], state["log_std_max"] = float(LOG_STD_MIN), float(LOG_STD_MAX)
    else:
        state["log_std"] = tensor(pol.log_std)
    if vecnorm is not None and vecnorm.norm_obs:
        state["obs_mean"] = torch.tensor(vecnorm.obs_rms.mean, dtype=torch.float64)
        state["obs_var"] = torch.tensor(vecnorm.obs_rms.var, dtype=torch.float64)
        state["obs_eps"], state["obs_clip"] = float(vecnorm.epsilon), float(vecnorm.clip_obs)
    else:
        state["obs_mean"] = state["obs_var"] = None
        state["obs_eps"], state["obs_clip"] = 0.0, float("inf")
    space = model.action_space
    state["action_low"] = torch.tensor(space.low, dtype=torch.float64)
    state["action_high"] = torch.tensor(space.high, dtype=torch.float64)
    return state


def save_policy(state: dict, path: Path) -> None:
    import torch
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def evaluate(policy, env_id: str, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED,
             deterministic: bool = True, rng_seed: int = 0) -> np.ndarray:
    """Returns of `episodes` episodes (episode k starts from env seed `seed + k`); actions as in `policy.act`."""
    eps = run_episodes(env_id, policy, episodes=episodes, episode_seeds=lambda k: seed + k,
                       rng=np.random.default_rng(rng_seed), deterministic=deterministic,
                       num_envs=min(episodes, 50), progress=False)
    return np.array([float(np.sum(e["rewards"])) for e in eps])


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------
def algorithm_of(settings: dict) -> str:
    """'ppo' or 'sac': the key that holds the settings' keyword arguments."""
    return "sac" if "sac" in settings else "ppo"


def _sb3_kwargs(settings: dict) -> dict:
    import torch
    kw = json.loads(json.dumps(settings[algorithm_of(settings)]))  # deep copy
    pk = kw["policy_kwargs"]
    pk["activation_fn"] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[pk["activation_fn"]]
    return kw


def _make_venv(env_id: str, settings: dict):
    from offrl.gymenv import make_env
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = DummyVecEnv([lambda: Monitor(make_env(env_id))])
    if settings["normalize"]:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=True, clip_obs=10.0,
                            gamma=settings[algorithm_of(settings)]["gamma"])
    return venv


def work_dir_for(env_name: str, seed: int) -> Path:
    from offrl.paths import cache_dir
    return cache_dir() / "behaviour" / f"{family_of(env_name)}-seed{seed}"


def train_behaviour(env_name: str, total_steps: int | None = None, seed: int = 0, out_dir: str | Path | None = None,
                    log: Callable[[str], None] = print, snapshot_every: int = 25_000,
                    work_dir: str | Path | None = None) -> dict:
    """Train PPO or SAC (per SETTINGS) on `env_name`, snapshot and evaluate it, pick expert/medium/replay and
    write them to out_dir.

    Resumes from the checkpoint in work_dir (default: <data dir>/cache/behaviour/<family>-seed<seed>) if
    one exists. Returns the behaviour.json record."""
    import torch
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    env_id = env_id_of(env_name)
    family = family_of(env_name)
    settings = SETTINGS[env_id]
    total_steps = int(total_steps or settings["steps"])
    out_dir = Path(out_dir) if out_dir else POLICIES_DIR / family
    work = Path(work_dir) if work_dir else work_dir_for(env_name, seed)
    snaps_dir = work / "snapshots"
    snaps_dir.mkdir(parents=True, exist_ok=True)
    state_file = work / "state.json"
    algo = algorithm_of(settings)
    Algorithm = {"ppo": PPO, "sac": SAC}[algo]
    record_settings = {algo: settings[algo], "normalize": settings["normalize"], "n_envs": 1, "seed": seed,
                       "snapshot_every": snapshot_every}

    venv = _make_venv(env_id, settings)
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if state["settings"] != json.loads(json.dumps(record_settings)):
            raise RuntimeError(f"{work} holds a run with other settings; delete it to start afresh")
        if settings["normalize"]:
            venv = VecNormalize.load(str(work / "vecnormalize.pkl"), venv.venv)
        model = Algorithm.load(work / "model.zip", env=venv, device="cpu")
        if algo == "sac":
            model.load_replay_buffer(work / "replay.pkl")
        log(f"resuming {env_id} seed {seed} from step {model.num_timesteps:,} ({work})")
    else:
        state = dict(settings=record_settings, snapshots=[], train_seconds=0.0, eval_seconds=0.0)
        model = Algorithm("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **_sb3_kwargs(settings))
        log(f"training {algo.upper()} on {env_id}, seed {seed}, {total_steps:,} steps, snapshots every "
            f"{snapshot_every:,} (checkpoints in {work})")

    def snapshot():
        step = int(model.num_timesteps)
        t0 = time.time()
        pstate = extract_policy(model, venv if settings["normalize"] else None, env_id, step)
        path = snaps_dir / f"step_{step:08d}.pt"
        save_policy(pstate, path)
        rets = evaluate(BehaviourPolicy.load(path), env_id)
        brets = evaluate(BehaviourPolicy.load(path), env_id, deterministic=False)
        state["eval_seconds"] += time.time() - t0
        state["snapshots"].append(dict(step=step, file=path.name, eval_mean=round(float(rets.mean()), 2),
                                       eval_std=round(float(rets.std()), 2),
                                       behaviour_mean=round(float(brets.mean()), 2)))
        # checkpoint: model, normaliser / replay buffer, then the state that names them (written last)
        saves = [(model.save, "model.zip")]
        if settings["normalize"]:
            saves.append((venv.save, "vecnormalize.pkl"))
        if algo == "sac":
            saves.append((model.save_replay_buffer, "replay.pkl"))
        for save, name in saves:
            with atomic_path(work / name) as tmp:
                save(str(tmp))
        write_text_atomic(state_file, json.dumps(state, indent=1))
        train_ret = [ep["r"] for ep in model.ep_info_buffer] if model.ep_info_buffer else []
        noise = "" if algo == "sac" else f"std {np.exp(pstate['log_std'].numpy()).mean():.3f}  "
        log(f"{env_id} step {step:>9,}  eval {rets.mean():8.1f} ± {rets.std():6.1f}  stochastic {brets.mean():8.1f}  "
            f"train-ep {np.mean(train_ret) if train_ret else float('nan'):8.1f}  "
            f"{noise}"
            f"train {state['train_seconds']:7.0f}s ({step / max(state['train_seconds'], 1e-9):5.0f} steps/s)")

    if not state["snapshots"]:
        snapshot()  # step 0: the untrained policy, the start of medium-replay
    while model.num_timesteps < total_steps:
        target = min(total_steps, (model.num_timesteps // snapshot_every + 1) * snapshot_every)
        t0 = time.time()
        model.learn(total_timesteps=target - model.num_timesteps, reset_num_timesteps=False, progress_bar=False)
        state["train_seconds"] += time.time() - t0
        snapshot()
    venv.close()
    return write_policies(env_name, work, out_dir, log=log)


def pick_expert(snapshots: list[dict]) -> int:
    """The snapshot with the best deterministic evaluation return."""
    return int(np.argmax([s["eval_mean"] for s in snapshots]))


def pick(snapshots: list[dict], expert_return: float | None = None) -> tuple[int, int, list[int]]:
    """(expert index, medium index, replay indices) from the evaluated snapshots in training order.

    expert: `pick_expert`. medium: among the snapshots before the expert, the one whose behaviour return
    (stochastic actions, as the datasets are collected) is closest to a third of the expert's behaviour return
    (`expert_return`, the 100-episode reference, else the expert snapshot's own 10-episode value). Picking
    medium by the deterministic return instead can land on a snapshot whose mean action briefly collapsed
    while its stochastic behaviour is near the expert's (seen on Hopper).
    replay: the snapshots from the first (step 0) up to medium, at most MAX_REPLAY, evenly spaced."""
    behav = np.array([s["behaviour_mean"] for s in snapshots])
    expert = pick_expert(snapshots)
    target = (behav[expert] if expert_return is None else expert_return) / 3
    before = list(range(expert)) or [i for i in range(len(snapshots)) if i != expert] or [expert]
    medium = min(before, key=lambda i: (abs(behav[i] - target), i))
    upto = list(range(medium + 1))
    if len(upto) > MAX_REPLAY:
        upto = sorted(set(np.linspace(0, medium, MAX_REPLAY).round().astype(int).tolist()))
    return expert, medium, upto


def write_policies(env_name: str, work: str | Path, out_dir: str | Path | None = None,
                   log: Callable[[str], None] = print) -> dict:
    """Pick expert/medium/replay from the run in `work`, copy them to out_dir, measure the reference returns
    and write behaviour.json."""
    env_id, family = env_id_of(env_name), family_of(env_name)
    work = Path(work)
    out_dir = Path(out_dir) if out_dir else POLICIES_DIR / family
    state = json.loads((work / "state.json").read_text())
    snaps = state["snapshots"]
    missing = [s for s in snaps if "behaviour_mean" not in s]  # runs from before behaviour returns were kept
    for snap in missing:
        rets = evaluate(BehaviourPolicy.load(work / "snapshots" / snap["file"]), env_id, deterministic=False)
        snap["behaviour_mean"] = round(float(rets.mean()), 2)
    if missing:
        write_text_atomic(work / "state.json", json.dumps(state, indent=1))
        log(f"measured the behaviour return of {len(missing)} snapshots")
    t0 = time.time()
    expert_pol = BehaviourPolicy.load(work / "snapshots" / snaps[pick_expert(snaps)]["file"])
    rand_pol = UniformPolicy(expert_pol.low, expert_pol.high)
    ref_random = evaluate(rand_pol, env_id, REFERENCE_EPISODES, REFERENCE_SEED, deterministic=False, rng_seed=1)
    ref_expert = evaluate(expert_pol, env_id, REFERENCE_EPISODES, REFERENCE_SEED, deterministic=False, rng_seed=2)
    log(f"reference returns ({REFERENCE_EPISODES} episodes, stochastic actions): random {ref_random.mean():.1f}, "
        f"expert {ref_expert.mean():.1f} ({time.time() - t0:.0f}s)")
    expert, medium, replay = pick(snaps, expert_return=float(ref_expert.mean()))
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.pt"):
        old.unlink()
    chosen = {"expert.pt": expert, "medium.pt": medium}
    chosen.update({f"replay_{k:02d}.pt": i for k, i in enumerate(replay)})
    files = {}
    for name, i in chosen.items():
        shutil.copyfile(work / "snapshots" / snaps[i]["file"], out_dir / name)
        files[name] = dict(step=snaps[i]["step"], eval_mean=snaps[i]["eval_mean"], sha256=file_sha256(out_dir / name),
                           bytes=(out_dir / name).stat().st_size)

    algo = algorithm_of(state["settings"])
    p = state["settings"][algo]
    record = dict(
        env_id=env_id, family=family, algorithm=f"{algo.upper()} (stable-baselines3)", seed=state["settings"]["seed"],
        steps_trained=snaps[-1]["step"], versions=versions(),
        hyperparameters=dict(p, normalize=state["settings"]["normalize"], n_envs=state["settings"]["n_envs"],
                             vecnormalize=dict(norm_obs=True, norm_reward=True, clip_obs=10.0)
                             if state["settings"]["normalize"] else None),
        training_seconds=round(state["train_seconds"], 1), eval_seconds=round(state["eval_seconds"], 1),
        steps_per_second=round(snaps[-1]["step"] / max(state["train_seconds"], 1e-9), 1),
        snapshot_every=state["settings"]["snapshot_every"],
        evaluation=dict(episodes=EVAL_EPISODES, env_seeds=f"{EVAL_SEED} + k",
                        eval_mean="deterministic actions (the mean)",
                        behaviour_mean="stochastic actions as in the datasets (Generator seed 0)"),
        snapshots=[dict(step=s["step"], eval_mean=s["eval_mean"], eval_std=s["eval_std"],
                        behaviour_mean=s["behaviour_mean"]) for s in snaps],
        picked=dict(expert=dict(step=snaps[expert]["step"], eval_mean=snaps[expert]["eval_mean"],
                                behaviour_mean=snaps[expert]["behaviour_mean"],
                                rule="best eval_mean"),
                    medium=dict(step=snaps[medium]["step"], eval_mean=snaps[medium]["eval_mean"],
                                behaviour_mean=snaps[medium]["behaviour_mean"],
                                rule="behaviour_mean closest to reference_returns.expert / 3, among snapshots before the expert"),
                    replay=[snaps[i]["step"] for i in replay]),
        reference_returns=dict(random=round(float(ref_random.mean()), 4), expert=round(float(ref_expert.mean()), 4),
                               expert_std=round(float(ref_expert.std()), 2), episodes=REFERENCE_EPISODES,
                               env_seeds=f"{REFERENCE_SEED} + k", actions="stochastic (as in the datasets)"),
        files=files,
    )
    (out_dir / "behaviour.json").write_text(json.dumps(record, indent=1) + "\n")
    log(f"wrote {len(files)} policies to {out_dir}: expert step {snaps[expert]['step']:,} "
        f"(eval {snaps[expert]['eval_mean']:.1f}, stochastic {snaps[expert]['behaviour_mean']:.1f}), medium step "
        f"{snaps[medium]['step']:,} (eval {snaps[medium]['eval_mean']:.1f}, stochastic "
        f"{snaps[medium]['behaviour_mean']:.1f}), replay steps {[snaps[i]['step'] for i in replay]}")
    return record
