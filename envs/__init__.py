"""Environments and dataset recipes the suite ships. Importing this package registers them in the core.

A recipe turns a dataset name (`pointmass-medium`) into episodes and reference scores, with no download.
pyproject.toml declares this package in the entry-point group `offrl.envs`: the core finds it there and
never imports envs/. What it registers: the recipes (offrl.data.recipes), the termination functions for
model rollouts (envs/termination.py, into offrl.termination), the trainers of the MuJoCo behaviour policies
(`offrl datasets train-behaviour`), and the Gymnasium ids offrl/PointMass-v0 (envs/pointmass.py),
offrl/PointGoals-v0 (envs/pointgoals.py: reward-free, with a task set), offrl/DMCWalker-v0
(envs/dmc_walker.py: dm_control's walker with the URLB tasks) and offrl/ICUSepsis-v2 (envs/sepsis.py).
"""
import functools

from offrl.data.recipes import Recipe, register_behaviour_trainer, register_recipe
from offrl.envs import behaviour, dmc_walker, mujoco, pointgoals, pointmass, sepsis, termination  # noqa: F401  (termination registers itself)

register_recipe(Recipe(
    family="pointmass",
    env_id=pointmass.ENV_ID,
    levels=("random", "medium", "expert", "medium-replay", "medium-expert"),
    default_size={"random": 100_000, "medium": 100_000, "expert": 100_000, "medium-replay": 100_000,
                  "medium-expert": 200_000},
    build_episodes=pointmass.build_episodes,
    reference_returns=pointmass.reference_returns,
    version="0",
    description="PointMass-v0: reach a goal in the plane; optimum known in closed form (envs/pointmass.py)",
))

# ICU-Sepsis (envs/sepsis.py): registered without the `sepsis` extra too, so that building a dataset says
# which package it needs.
register_recipe(Recipe(
    family="sepsis",
    env_id=sepsis.ENV_ID,
    levels=tuple(sepsis.LEVELS),
    default_size={level: 180_000 for level in sepsis.LEVELS},  # ~19.5k episodes, about MIMIC's cohort
    build_episodes=sepsis.build_episodes,
    reference_returns=sepsis.reference_returns,
    version="0",
    description="ICU-Sepsis 2.0.1 tabular MDP (716 states, 25 actions); survival reward (envs/sepsis.py)",
    provenance={"icu_sepsis": sepsis.PINNED},
    policy_metrics=sepsis.policy_metrics,
))

register_recipe(Recipe(
    family="pointgoals",
    env_id=pointgoals.ENV_ID,
    levels=pointgoals.LEVELS,
    default_size={"random": 100_000, "narrow": 100_000},
    build_episodes=pointgoals.build_episodes,
    reference_returns=lambda: (None, None),  # reward-free: each task has its own (pointgoals.task_set)
    version="0",
    description="PointGoals-v0: reward-free point in the plane, four goal-reaching tasks (envs/pointgoals.py)",
    tasks=pointgoals.task_set,
))

# dm_control's walker (envs/dmc_walker.py): registered without the `dmc` extra too, so that building its
# dataset says which package it needs.
register_recipe(Recipe(
    family="dmc-walker",
    env_id=dmc_walker.ENV_ID,
    levels=dmc_walker.LEVELS,
    default_size={"random": 100_000},  # Jeen et al.'s low-quality size (ExORL subsampled to 100k)
    build_episodes=dmc_walker.build_episodes,
    reference_returns=lambda: (None, None),  # reward-free: each task has its own (dmc_walker.task_set)
    version="0",
    description="dm_control walker, reward-free uniform-random data with physics states; URLB tasks "
                "stand, walk, run, flip (envs/dmc_walker.py)",
    provenance={"dm_control": dmc_walker.PINNED},
    tasks=dmc_walker.task_set,
))

# The MuJoCo recipes (envs/mujoco.py): one per env whose behaviour policies are shipped in envs/policies/.
for _family in mujoco.available_families():
    register_recipe(mujoco.make_recipe(_family))

# Every MuJoCo family can train its policies, also one whose policies (and so its recipe) do not exist yet.
for _family in behaviour.FAMILIES:
    register_behaviour_trainer(_family, functools.partial(behaviour.train_behaviour, _family))
