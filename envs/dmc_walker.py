"""dm_control's planar walker with the URLB tasks stand, walk, run and flip, for zero-shot RL (FB, VC-FB, MC-FB).

The environment is dm_control's suite walker (dm_control==1.0.50, the `dmc` extra): 1,000 steps of 0.025 s
per episode (25 s, URLB's time limit), 6 actuators in [-1, 1], and the 24-dim observation URLB reads (body
orientations 14, torso height 1, velocities 9, in that order). Episodes start from random joint angles, as
every walker task of dm_control and URLB does. URLB's walker.xml (Laskin et al. 2021, custom_dmc_tasks/) is the
stock model with other include paths, so the stock model is used.

Task rewards, re-implemented from URLB's published formulas with dm_control.utils.rewards.tolerance; each is
a function of the physics state after the step:

    standing = tolerance(torso height, bounds=(1.2, ∞), margin=0.6)             (Gaussian)
    stand    = (3·standing + (1 + torso upright) / 2) / 4
    move_v   = tolerance(centre-of-mass x velocity, bounds=(v, ∞), margin=v/2, value_at_margin=0.5, linear)
    flip     = tolerance(torso subtree angular momentum about y, bounds=(5, ∞), margin=5, value_at_margin=0,
                         linear)
    reward   = stand for stand, else stand · (5·move + 1) / 6 with move = move_1 (walk), move_8 (run), flip

Returns lie in [0, 1000]. The papers (URLB, ExORL, Jeen et al. 2024) report raw returns, so each task's
reference scores are 0 and 1000: a normalised score is the return divided by 10.

Data: the `random` level rolls a uniform-random policy (ExORL's RANDOM, the low-coverage one) for 100,000
transitions (100 episodes), the size of Jeen et al.'s low-quality datasets (ExORL's 10M subsampled to 100k).
Episodes are reward-free; each step's physics state (qpos, qvel) is stored as the extras `infos/qpos`,
`infos/qvel` and, for the state after the step, `next_infos/qpos`, `next_infos/qvel`, so that any task's
reward can be relabelled exactly (`relabel`). ExORL's RND and DIAYN datasets come from exploration agents
trained for millions of steps, which a CPU cannot do in reasonable time: they are not offered.
"""
from __future__ import annotations

import functools
import os
from importlib import metadata

import gymnasium as gym
import numpy as np

from offrl.data.recipes import collect_transitions
from offrl.errors import OfflineRLError
from offrl.gymenv import make_env
from offrl.tasks import Task, TaskSet

PACKAGE, PINNED = "dm_control", "1.0.50"
ENV_ID = "offrl/DMCWalker-v0"
MAX_STEPS = 1000  # URLB: 25 s at the 0.025 s control step
CONTROL_TIMESTEP = 0.025
STAND_HEIGHT = 1.2  # URLB's constants (the same as dm_control's stock walker tasks)
WALK_SPEED, RUN_SPEED, SPIN_SPEED = 1.0, 8.0, 5.0
TASKS = ("stand", "walk", "run", "flip")
LEVELS = ("random",)


def available() -> bool:
    try:
        return metadata.distribution(PACKAGE).version == PINNED
    except metadata.PackageNotFoundError:
        return False


@functools.cache
def _walker_module():
    """dm_control's suite walker module. dm_control picks an OpenGL backend when imported; offrl never renders,
    so unless the user chose one (MUJOCO_GL), rendering is switched off for the import: no display is needed.
    Importing dm_control changes nothing else in the process (see the warning handler below)."""
    try:
        version = metadata.distribution(PACKAGE).version
    except metadata.PackageNotFoundError:
        raise OfflineRLError(f"the dm_control walker needs the dmc extra: pip install 'offrl[dmc]' "
                             f"({PACKAGE}=={PINNED})") from None
    if version != PINNED:
        raise OfflineRLError(f"offrl's walker tasks are pinned to {PACKAGE}=={PINNED}, found {version}: "
                             f"pip install '{PACKAGE}=={PINNED}'")
    import mujoco

    chosen = os.environ.get("MUJOCO_GL")
    if chosen is None:
        os.environ["MUJOCO_GL"] = "disable"
    # dm_control's import routes every MuJoCo warning of the process to absl logging; MuJoCo's handler is put
    # back, so that the other envs' warnings (and offrl.gymenv.quiet_mujoco) behave as without dm_control.
    warning_handler = mujoco.get_mju_user_warning()
    try:
        from dm_control.suite import walker
    finally:
        mujoco.set_mju_user_warning(warning_handler)
        if chosen is None:
            del os.environ["MUJOCO_GL"]
    return walker


def new_physics():
    walker = _walker_module()
    return walker.Physics.from_xml_string(*walker.get_model_and_assets())


def task_reward(task: str, physics) -> float:
    """The URLB reward of `task` in the physics' current state (the formulas in the module docstring)."""
    from dm_control.utils import rewards

    standing = rewards.tolerance(physics.torso_height(), bounds=(STAND_HEIGHT, float("inf")),
                                 margin=STAND_HEIGHT / 2)
    stand = (3 * standing + (1 + physics.torso_upright()) / 2) / 4
    if task == "stand":
        return float(stand)
    if task == "flip":
        move = rewards.tolerance(physics.named.data.subtree_angmom["torso"][1], bounds=(SPIN_SPEED, float("inf")),
                                 margin=SPIN_SPEED, value_at_margin=0, sigmoid="linear")
    else:
        speed = {"walk": WALK_SPEED, "run": RUN_SPEED}[task]
        move = rewards.tolerance(physics.horizontal_velocity(), bounds=(speed, float("inf")), margin=speed / 2,
                                 value_at_margin=0.5, sigmoid="linear")
    return float(stand * (5 * move + 1) / 6)


@functools.cache
def _relabel_physics():
    return new_physics()


def relabel(task: str, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """Rewards [N] of `task` in the stored states (qpos [N, 9], qvel [N, 9]): each is set, MuJoCo's forward
    pass recomputes positions, velocities and sensors, and the reward is read as after a step."""
    physics = _relabel_physics()
    out = np.empty(len(qpos), np.float32)
    for i in range(len(qpos)):
        physics.data.qpos[:] = qpos[i]
        physics.data.qvel[:] = qvel[i]
        physics.forward()
        out[i] = task_reward(task, physics)
    return out


class DMCWalkerEnv(gym.Env):
    """The Gymnasium face of the dm_control walker; `task` names the URLB reward it pays (None: always 0).
    Time limits are Gymnasium's (max_episode_steps); dm_control's own is switched off."""
    metadata = {"render_modes": []}

    def __init__(self, task: str | None = None):
        if task is not None and task not in TASKS:
            raise OfflineRLError(f"the walker's tasks are {', '.join(TASKS)}, got {task!r}")
        walker = _walker_module()
        from dm_control.rl import control

        self.task = task
        self._random = np.random.RandomState(0)  # the dm_control task's start randomiser, reseeded by reset
        self.physics = new_physics()
        self._env = control.Environment(self.physics, walker.PlanarWalker(move_speed=0.0, random=self._random),
                                        time_limit=float("inf"), control_timestep=CONTROL_TIMESTEP)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(24,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(6,), dtype=np.float32)

    @staticmethod
    def _obs(timestep) -> np.ndarray:
        o = timestep.observation
        return np.concatenate([o["orientations"], [o["height"]], o["velocity"]]).astype(np.float32)

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """The physics state (qpos, qvel) now: what a dataset stores to relabel rewards."""
        return self.physics.data.qpos.copy(), self.physics.data.qvel.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._random.seed(seed)
        return self._obs(self._env.reset()), {}

    def step(self, action):
        timestep = self._env.step(np.asarray(action, np.float64))
        reward = 0.0 if self.task is None else task_reward(self.task, self.physics)
        return self._obs(timestep), reward, False, False, {}


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="offrl.envs.dmc_walker:DMCWalkerEnv", max_episode_steps=MAX_STEPS)


def build_episodes(level: str, transitions: int, seed: int) -> list[dict]:
    """Reward-free episodes of a uniform-random policy from the walker's random starts, until `transitions`,
    with the physics state of every step."""
    if level not in LEVELS:
        raise KeyError(level)
    env = DMCWalkerEnv()
    rng = np.random.default_rng(seed)

    def episode(_transitions_so_far):
        obs, _ = env.reset(seed=int(rng.integers(2 ** 31)))
        observations, states = [obs], [env.state()]
        actions = rng.uniform(-1.0, 1.0, size=(MAX_STEPS, 6)).astype(np.float32)
        for action in actions:
            observations.append(env.step(action)[0])
            states.append(env.state())
        qpos, qvel = (np.stack(x) for x in zip(*states))  # T + 1 states: before the first step to after the last
        return [dict(observations=np.stack(observations), actions=actions, rewards=np.zeros(MAX_STEPS),
                     terminations=np.zeros(MAX_STEPS, bool), truncations=np.r_[np.zeros(MAX_STEPS - 1, bool), True],
                     infos={"qpos": qpos, "qvel": qvel})]

    return collect_transitions(episode, transitions)


def walker_task(name: str) -> Task:
    def reward(batch: dict) -> np.ndarray:
        try:
            qpos, qvel = batch["next_infos/qpos"], batch["next_infos/qvel"]
        except KeyError:
            raise OfflineRLError(f"relabelling the walker's {name} reward needs the stored physics states "
                                 "(extras next_infos/qpos and next_infos/qvel), which this data lacks") from None
        return relabel(name, qpos, qvel)

    return Task(name=name, reward=reward, make_env=functools.partial(make_env, ENV_ID, task=name),
                ref_min_score=0.0, ref_max_score=float(MAX_STEPS))


@functools.cache
def task_set() -> TaskSet:
    return TaskSet(tuple(walker_task(name) for name in TASKS))
