"""Recipes for the suite's own datasets, and their storage as Minari datasets under the offrl data folder.

A recipe (registered by envs/) says how to make `<family>-<level>` episodes and the reference returns.
`build` writes them as the Minari dataset `offrl/<family>/<level>-v<version>` (any Minari user can load it),
with ref_min_score / ref_max_score in its metadata and the recipe's provenance beside it. The write goes to
a temporary folder first and is renamed into place, so a killed build leaves nothing half-written.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from offrl.atomic import file_sha256
from offrl.errors import OfflineRLError
from offrl.paths import datasets_dir

RECIPES: dict[str, "Recipe"] = {}


@dataclass
class Recipe:
    family: str
    env_id: str
    levels: tuple[str, ...]
    default_size: dict[str, int]
    build_episodes: Callable[[str, int, int], list]  # (level, transitions, seed) -> Minari-style episode dicts
    reference_returns: Callable[[], tuple[float, float]]  # (uniform-random mean return, expert mean return)
    version: str = "0"
    description: str = ""
    provenance: dict = field(default_factory=dict)  # e.g. policy file hashes


def register_recipe(recipe: Recipe) -> None:
    RECIPES[recipe.family] = recipe


def load_builtin() -> None:
    """The recipes the suite ships register themselves when offrl.envs is imported."""
    import offrl.envs  # noqa: F401


def split_name(name: str) -> tuple[Recipe, str] | None:
    """`pointmass-medium-replay` -> (pointmass recipe, "medium-replay"), or None if no recipe matches."""
    load_builtin()
    for family, recipe in RECIPES.items():
        if name.startswith(family + "-") and name[len(family) + 1:] in recipe.levels:
            return recipe, name[len(family) + 1:]
    return None


def minari_id(recipe: Recipe, level: str, size: int | None = None) -> str:
    tag = level if size is None or size == recipe.default_size[level] else f"{level}-n{size}"
    return f"offrl/{recipe.family}/{tag}-v{recipe.version}"


def minari_store() -> Path:
    return datasets_dir() / "minari"


def dataset_path(dataset_id: str) -> Path:
    return minari_store() / dataset_id


def is_built(dataset_id: str) -> bool:
    return (dataset_path(dataset_id) / "offrl_recipe.json").exists()


def build(recipe: Recipe, level: str, size: int | None = None, seed: int = 0, force: bool = False,
          log: Callable[[str], None] = print) -> str:
    """Generate and store one dataset; returns its Minari id. Deterministic in (recipe, level, size, seed)."""
    import minari
    from minari.data_collector import EpisodeBuffer

    from offrl.data.minari_reader import minari_root

    size = size or recipe.default_size[level]
    dataset_id = minari_id(recipe, level, size)
    final = dataset_path(dataset_id)
    if is_built(dataset_id) and not force:
        return dataset_id
    t0 = time.time()
    log(f"building {dataset_id}: {size:,} transitions of {recipe.env_id} ({level})")
    episodes = recipe.build_episodes(level, size, seed)
    ref_min, ref_max = recipe.reference_returns()
    buffers = [EpisodeBuffer(id=i, observations=e["observations"], actions=e["actions"],
                             rewards=np.asarray(e["rewards"], np.float64), terminations=e["terminations"],
                             truncations=e["truncations"], infos={}) for i, e in enumerate(episodes)]
    minari_store().mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(dir=minari_store(), prefix=".build-"))
    try:
        with minari_root(tmp_root):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                minari.create_dataset_from_buffers(
                    dataset_id, buffers, env=recipe.env_id, algorithm_name=f"offrl-recipe:{level}",
                    author="offrl", author_email="offrl@users.noreply.github.com",
                    code_permalink="https://github.com/offrl/offrl", description=recipe.description,
                    ref_min_score=ref_min, ref_max_score=ref_max, data_format="hdf5")
        built = tmp_root / dataset_id
        provenance = dict(recipe.provenance, recipe=recipe.family, level=level, env_id=recipe.env_id,
                          version=recipe.version, seed=seed, transitions=size, episodes=len(episodes),
                          ref_min_score=ref_min, ref_max_score=ref_max, build_seconds=round(time.time() - t0, 2),
                          data_sha256=file_sha256(built / "data" / "main_data.hdf5"))
        (built / "offrl_recipe.json").write_text(json.dumps(provenance, indent=2))
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        built.rename(final)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    log(f"built {dataset_id} in {time.time() - t0:.1f}s: {len(episodes)} episodes")
    return dataset_id


def read_provenance(dataset_id: str) -> dict:
    try:
        return json.loads((dataset_path(dataset_id) / "offrl_recipe.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise OfflineRLError(f"generated dataset {dataset_id} has a missing or corrupt offrl_recipe.json: {exc}")

