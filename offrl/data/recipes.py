"""Recipes for the suite's own datasets, and their storage as Minari datasets under the offrl data folder.

A recipe says how to make `<family>-<level>` episodes and the reference returns (an episode's optional
"infos" dict of per-step arrays becomes the dataset's extras). `build` writes them as the
Minari dataset `offrl/<family>/<level>-v<version>` (any Minari user can load it), with ref_min_score /
ref_max_score in its metadata and the recipe's provenance beside it (with the behaviour data's mean return).
The write goes to a temporary folder first and is renamed into place, so a killed build leaves nothing
half-written. A level the recipe declares as the concatenation of other levels' datasets (medium-expert =
medium + expert) is read from them when they are built, not generated again.

The environment packages register their recipes, and the trainers of their behaviour policies, here when
the entry points of the group `offrl.envs` are loaded (offrl/extensions.py): this module never imports them.
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

from offrl import extensions
from offrl.atomic import file_sha256
from offrl.errors import OfflineRLError
from offrl.gymenv import quiet_mujoco
from offrl.lock import FileLock
from offrl.paths import datasets_dir

RECIPES: dict[str, "Recipe"] = {}
# family -> train(total_steps=None, seed=0, log=print): trains the behaviour policies its recipe rolls out.
# Kept apart from the Recipe: a family's recipe exists only once its policies do.
BEHAVIOUR_TRAINERS: dict[str, Callable[..., object]] = {}


@dataclass
class Recipe:
    family: str
    env_id: str
    levels: tuple[str, ...]
    default_size: dict[str, int]
    build_episodes: Callable[..., list]  # (level, transitions, seed[, workers=]) -> Minari-style episode dicts
    reference_returns: Callable[[], tuple[float, float]]  # (uniform-random mean return, expert mean return)
    version: str = "0"
    description: str = ""
    provenance: dict = field(default_factory=dict)  # e.g. policy file hashes
    parallel: bool = False  # build_episodes also takes workers= (processes; None: the default)
    # (level, transitions) -> the (level, size) datasets whose episodes, in order, are this one's (same seed)
    parts: Callable[[str, int], list[tuple[str, int]] | None] | None = None
    # For a tabular env whose policies can be evaluated exactly: (policies as action indices [S, n_obs] or
    # probabilities [S, n_obs, n_act]) -> {result column: [S] values} (Dataset.policy_metrics).
    policy_metrics: Callable[..., dict] | None = None
    # A reward-free family: its episodes' rewards are zeros, it has no reference returns (reference_returns
    # is not called) and `tasks()` gives the task set it is evaluated on (offrl/tasks.py).
    tasks: Callable[[], object] | None = None


def register_recipe(recipe: Recipe) -> None:
    RECIPES[recipe.family] = recipe


def register_behaviour_trainer(family: str, train: Callable[..., object]) -> None:
    """Make `offrl datasets train-behaviour FAMILY` call train(total_steps=, seed=, log=)."""
    BEHAVIOUR_TRAINERS[family] = train


def load_builtin() -> None:
    """Register the recipes of the installed environment packages (offrl's envs/ and any plugin's), once.
    Loading them also registers their Gymnasium env ids."""
    extensions.load_envs()


def behaviour_trainer(family: str) -> Callable[..., object]:
    load_builtin()
    if family not in BEHAVIOUR_TRAINERS:
        raise OfflineRLError(f"offrl cannot train behaviour policies for {family!r}: it can for "
                             f"{', '.join(sorted(BEHAVIOUR_TRAINERS)) or 'no environment'}")
    return BEHAVIOUR_TRAINERS[family]


def split_name(name: str) -> tuple[Recipe, str] | None:
    """`pointmass-medium-replay` -> (pointmass recipe, "medium-replay"), or None if no recipe matches."""
    load_builtin()
    for family, recipe in RECIPES.items():
        if name.startswith(family + "-") and name[len(family) + 1:] in recipe.levels:
            return recipe, name[len(family) + 1:]
    return None


def minari_id(recipe: Recipe, level: str, size: int | None = None) -> str:
    if size is not None and size <= 0:  # every path to a generated dataset names it here first
        raise OfflineRLError(f"a dataset size must be a positive number of transitions, got {size}")
    tag = level if size is None or size == recipe.default_size[level] else f"{level}-n{size}"
    return f"offrl/{recipe.family}/{tag}-v{recipe.version}"


def minari_store() -> Path:
    return datasets_dir() / "minari"


def dataset_path(dataset_id: str) -> Path:
    return minari_store() / dataset_id


def is_built(dataset_id: str) -> bool:
    return (dataset_path(dataset_id) / "offrl_recipe.json").exists()


def build(recipe: Recipe, level: str, size: int | None = None, seed: int = 0, force: bool = False,
          workers: int | None = None, log: Callable[[str], None] = print) -> str:
    """Generate and store one dataset; returns its Minari id. Deterministic in (recipe, level, size, seed);
    `workers` (for a parallel recipe) changes only the speed. One process builds a dataset at a time: another
    that needs it waits, then uses what the first built (offrl/lock.py)."""
    dataset_id = minari_id(recipe, level, size)
    size = recipe.default_size[level] if size is None else size
    if is_built(dataset_id) and not force:
        return dataset_id
    lock = FileLock(datasets_dir() / ".locks" / f"{dataset_id.replace('/', '_')}.lock")
    lock.acquire(wait=True, on_wait=lambda holder: log(f"waiting for {holder}, which is building {dataset_id}"))
    try:
        if is_built(dataset_id) and (lock.waited or not force):  # the other process built it
            return dataset_id
        _build(recipe, level, size, dataset_id, seed, workers, log)
    finally:
        lock.release()
    return dataset_id


def _build(recipe: Recipe, level: str, size: int, dataset_id: str, seed: int, workers: int | None,
           log: Callable[[str], None]) -> None:
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    from offrl.data.minari_reader import minari_root

    final = dataset_path(dataset_id)
    t0 = time.time()
    log(f"building {dataset_id}: {size:,} transitions of {recipe.env_id} ({level})")
    part_ids = built_parts(recipe, level, size, seed)
    if part_ids:
        log(f"{dataset_id}: reading the episodes of {' and '.join(part_ids)} (built with seed {seed}), "
            "not generating them again")
        episodes = [ep for part in part_ids for ep in read_episodes(part)]
    else:
        episodes = recipe.build_episodes(level, size, seed, **({"workers": workers} if recipe.parallel else {}))
    ref_min, ref_max = recipe.reference_returns() if recipe.tasks is None else (None, None)
    buffers = [EpisodeBuffer(id=i, observations=e["observations"], actions=e["actions"],
                             rewards=np.asarray(e["rewards"], np.float64), terminations=e["terminations"],
                             truncations=e["truncations"], infos=e.get("infos", {})) for i, e in enumerate(episodes)]
    minari_store().mkdir(parents=True, exist_ok=True)
    remove_stale_builds(dataset_id)
    tmp_root = Path(tempfile.mkdtemp(dir=minari_store(), prefix=f".build-{dataset_id.replace('/', '_')}-"))
    try:
        with minari_root(tmp_root):
            import warnings
            with warnings.catch_warnings(), quiet_mujoco():  # minari makes the env itself, twice
                warnings.simplefilter("ignore")
                minari.create_dataset_from_buffers(
                    dataset_id, buffers, env=recipe.env_id, algorithm_name=f"offrl-recipe:{level}",
                    author="offrl", author_email="offrl@users.noreply.github.com",
                    code_permalink="https://github.com/offrl/offrl", description=recipe.description,
                    data_format="hdf5", **({} if ref_min is None else
                                           dict(ref_min_score=ref_min, ref_max_score=ref_max)))
        built = tmp_root / dataset_id
        provenance = dict(recipe.provenance, recipe=recipe.family, level=level, env_id=recipe.env_id,
                          version=recipe.version, seed=seed, transitions=size, episodes=len(episodes),
                          ref_min_score=ref_min, ref_max_score=ref_max,
                          **(behaviour_returns(episodes, gym.spec(recipe.env_id).max_episode_steps, ref_min, ref_max)
                             if ref_min is not None else {"tasks": recipe.tasks().names}),
                          **({"read_from": part_ids} if part_ids else {}),
                          data_sha256=file_sha256(built / "data" / "main_data.hdf5"))
        provenance["build_seconds"] = round(time.time() - t0, 2)
        (built / "offrl_recipe.json").write_text(json.dumps(provenance, indent=2))
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        built.rename(final)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    log(f"built {dataset_id} in {time.time() - t0:.1f}s: {len(episodes)} episodes, " + (
        f"behaviour return {provenance['behaviour_return']:.1f} (normalised "
        f"{provenance['behaviour_normalized_return']:.1f})" if ref_min is not None else
        f"reward-free, tasks {', '.join(provenance['tasks'])}"))


def remove_stale_builds(dataset_id: str) -> None:
    """Remove the temporary build folders of `dataset_id` that killed builds left. Called with the dataset's
    lock held, so no live process is building it: a folder named for it, or (named before builds carried the
    id) holding it, is a leftover. Folders of other datasets are left alone."""
    for tmp in minari_store().glob(".build-*"):
        if tmp.is_dir() and (tmp.name.startswith(f".build-{dataset_id.replace('/', '_')}-") or (tmp / dataset_id).exists()):
            shutil.rmtree(tmp, ignore_errors=True)


def collect_transitions(next_batch: Callable[[int], list[dict]], transitions: int) -> list[dict]:
    """Episodes from `next_batch(transitions so far)` until exactly `transitions` steps: a recipe's budget is
    counted in transitions, so the episode that crosses it is cut there and ends truncated (its per-step
    infos cut with it: T entries, or T + 1 where they are per state, like observations)."""
    episodes, total = [], 0
    while total < transitions:
        for ep in next_batch(total):
            steps = min(len(ep["actions"]), transitions - total)
            if steps <= 0:
                break
            if steps < len(ep["actions"]):
                ep = dict(ep, observations=ep["observations"][:steps + 1], actions=ep["actions"][:steps],
                          rewards=ep["rewards"][:steps], terminations=np.zeros(steps, bool),
                          truncations=np.r_[np.zeros(steps - 1, bool), True],
                          **({"infos": {k: v[:steps + (len(v) > len(ep["actions"]))]
                                        for k, v in ep["infos"].items()}} if "infos" in ep else {}))
            episodes.append(ep)
            total += steps
    return episodes


def behaviour_returns(episodes: list[dict], max_steps: int | None, ref_min: float, ref_max: float) -> dict:
    """Mean raw and normalised return of the complete episodes: those ending in a termination or at the time
    limit. An episode cut to fit the size (truncated before the limit) would pull the mean down; if every
    episode is cut (a size below one episode), all count."""
    returns = np.array([float(np.sum(e["rewards"])) for e in episodes])
    complete = np.array([bool(e["terminations"][-1] or (e["truncations"][-1] and len(e["rewards"]) == max_steps))
                         for e in episodes])
    counted = returns[complete] if complete.any() else returns
    mean = float(counted.mean())
    return dict(behaviour_return=round(mean, 3),
                behaviour_normalized_return=round(100 * (mean - ref_min) / (ref_max - ref_min), 2),
                behaviour_episodes=len(counted))


def built_parts(recipe: Recipe, level: str, size: int, seed: int) -> list[str] | None:
    """Minari ids of the built datasets that make up this one (see Recipe.parts), or None unless every one is
    built with this seed, size, recipe version and provenance (policy hashes)."""
    wanted = recipe.parts(level, size) if recipe.parts else None
    if not wanted:
        return None
    ids = [minari_id(recipe, part, n) for part, n in wanted]
    for dataset_id, (part, n) in zip(ids, wanted):
        if not is_built(dataset_id) or stale(recipe, read_provenance(dataset_id), level=part, seed=seed,
                                             transitions=n):
            return None
    return ids


def stale(recipe: Recipe, prov: dict, **expected) -> list[str]:
    """The provenance keys (behaviour policy hashes, training facts, recipe version, and `expected`) whose
    value recorded in a built dataset's provenance `prov` differs from what this recipe would record now."""
    now = dict(recipe.provenance, recipe=recipe.family, version=recipe.version, **expected)
    return [key for key, value in now.items() if prov.get(key) != value]


def read_episodes(dataset_id: str) -> list[dict]:
    """A stored dataset's episodes as the dicts build_episodes returns."""
    import minari

    from offrl.data.minari_reader import minari_root

    with minari_root(minari_store()):
        ds = minari.load_dataset(dataset_id, download=False)
        return [dict(observations=np.asarray(e.observations), actions=np.asarray(e.actions),
                     rewards=np.asarray(e.rewards, np.float64), terminations=np.asarray(e.terminations),
                     truncations=np.asarray(e.truncations)) for e in ds.iterate_episodes()]


def read_provenance(dataset_id: str) -> dict:
    try:
        return json.loads((dataset_path(dataset_id) / "offrl_recipe.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise OfflineRLError(f"generated dataset {dataset_id} has a missing or corrupt offrl_recipe.json: {exc}")

