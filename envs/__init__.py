"""Environments and dataset recipes the suite ships. Importing this package registers them.

A recipe turns a dataset name (`pointmass-medium`) into episodes and reference scores, with no download.
"""
from offrl.data.recipes import Recipe, register_recipe
from offrl.envs import pointmass

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

# The MuJoCo recipes (envs/mujoco.py): one per env whose behaviour policies are shipped in envs/policies/.
from offrl.envs import mujoco  # noqa: E402

for _family in mujoco.available_families():
    register_recipe(mujoco.make_recipe(_family))
