"""Dataset names -> Datasets. One place decides where data comes from, and always says what it chose.

Names:
    offrl:<family>-<level>        the suite's generated dataset (built on first use, no download)
    minari:<namespace/name-vN>    a local Minari dataset (never downloaded here)
    d4rl:<env>-<dataset>-v2       a D4RL hdf5 file in $D4RL_DATASET_DIR or ~/.d4rl/datasets
    <bare name>                   tried in the order of SEARCH_ORDER: the first source that has it wins
"""
from __future__ import annotations

from typing import Callable

import zipfile

import gymnasium as gym
import numpy as np

from offrl.atomic import atomic_path
from offrl.data import recipes
from offrl.data.dataset import Dataset, from_arrays, space_provenance
from offrl.errors import OfflineRLError
from offrl.gymenv import make_env

Log = Callable[[str], None]


FLAT_COPY = "offrl_flat.npz"
_FLAT_META = ("data_sha256", "ref_min_score", "ref_max_score")


def _generated_arrays(dataset_id: str, prov: dict) -> tuple[dict, dict]:
    """(flat transition arrays, {ref_min_score, ref_max_score}) of a generated dataset. Minari reads episode
    by episode (a minute for ICU-Sepsis' 20k short episodes), so the first read leaves a flat copy beside the
    dataset, used while the hash of Minari's data file (in the provenance) matches the one it was made from."""
    from offrl.data.minari_reader import load_minari

    path, key = recipes.dataset_path(dataset_id) / FLAT_COPY, str(prov.get("data_sha256", ""))
    if key and path.exists():
        try:
            with np.load(path, allow_pickle=False) as flat:
                if str(flat["data_sha256"]) == key:
                    return ({k: flat[k] for k in flat.files if k not in _FLAT_META},
                            {k: _reference(flat[k]) for k in _FLAT_META[1:]})
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable: read through Minari and write it again
    arrays, meta, _ = load_minari(dataset_id, root=recipes.minari_store())
    refs = {k: _reference(meta.get(k)) for k in _FLAT_META[1:]}  # None for a reward-free dataset
    if key:
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, **arrays, data_sha256=np.array(key),
                         **{k: np.array(np.nan if v is None else v) for k, v in refs.items()})
        except OSError:
            pass  # a read-only store: read through Minari every time
    return arrays, refs


def _reference(value) -> float | None:
    """A reference return as a float, or None where there is none (reward-free data; NaN in the flat copy)."""
    if value is None:
        return None
    value = float(value)
    return None if np.isnan(value) else value


def _load_generated(dataset_id: str, recipe: recipes.Recipe, level: str, prov: dict) -> Dataset:
    arrays, meta = _generated_arrays(dataset_id, prov)
    env_id = recipe.env_id
    space = gym.spec(env_id)
    env = make_env(env_id)
    spaces = space_provenance(env.observation_space, env.action_space)
    env.close()
    tasks = recipe.tasks() if recipe.tasks is not None else None
    return from_arrays(
        f"{recipe.family}-{level}", arrays, family=recipe.family, source="offrl",
        version=f"{dataset_id}", ref_min_score=None if tasks else float(meta["ref_min_score"]),
        ref_max_score=None if tasks else float(meta["ref_max_score"]), env_factory=lambda: make_env(env_id),
        tasks=tasks, reward_free=tasks is not None, policy_metrics=recipe.policy_metrics,
        provenance=dict(prov, minari_id=dataset_id, **spaces, max_episode_steps=space.max_episode_steps))


def resolve_generated(name: str, size: int | None = None, build: bool = True, log: Log = print) -> Dataset | None:
    found = recipes.split_name(name)
    if found is None:
        return None
    recipe, level = found
    dataset_id = recipes.minari_id(recipe, level, size)
    if not recipes.is_built(dataset_id):
        if not build:
            return None
        recipes.build(recipe, level, size=size, log=log)
    prov = recipes.read_provenance(dataset_id)
    differs = recipes.stale(recipe, prov)
    if differs:  # e.g. policies retrained without a version bump: its scores would not be this recipe's
        raise OfflineRLError(f"generated dataset {dataset_id} was built by another version of its recipe "
                             f"({', '.join(differs)} differ from this offrl's): rebuild it with "
                             f"`offrl datasets build {name} --force`")
    log(f"dataset {name}: offrl's generated {dataset_id} in {recipes.dataset_path(dataset_id)}")
    return _load_generated(dataset_id, recipe, level, prov)


def resolve_minari(name: str, log: Log = print) -> Dataset | None:
    from offrl.data.minari_reader import load_minari

    arrays, meta, ds = load_minari(name)
    env_factory = None
    try:
        ds.recover_environment(eval_env=True).close()
        env_factory = lambda: ds.recover_environment(eval_env=True)  # noqa: E731
    except Exception as exc:  # the env may need packages this machine lacks: training still works
        log(f"dataset {name}: its evaluation environment cannot be made ({type(exc).__name__}); "
            "evaluation will fail")
    family = name.split("/")[1] if name.count("/") >= 2 else name.split("/")[0]
    log(f"dataset {name}: Minari dataset in {meta['path']}")
    return from_arrays(name, arrays, family=family, source="minari", version=str(meta.get("minari_version", "")),
                       ref_min_score=meta.get("ref_min_score"), ref_max_score=meta.get("ref_max_score"),
                       env_factory=env_factory,
                       provenance=dict(minari_id=name, path=meta["path"],
                                       **space_provenance(ds.observation_space, ds.action_space),
                                       observation_layout=meta["observation_layout"]))


def resolve(name: str, size: int | None = None, log: Log = print) -> Dataset:
    """The Dataset a name stands for. `size` builds a generated dataset of that many transitions."""
    recipes.load_builtin()  # also registers offrl's env ids, which Minari datasets may have been recorded on
    ds = _resolve(name, size, log)
    if size is not None and ds.source != "offrl":  # a file on disk has the size it has
        raise OfflineRLError(f"a dataset size ({size:,}) applies only to datasets offrl generates; {name} is a "
                             f"{ds.source} dataset")
    return ds


def _resolve(name: str, size: int | None, log: Log) -> Dataset:
    if ":" in name:
        prefix, rest = name.split(":", 1)
        if prefix == "offrl":
            ds = resolve_generated(rest, size=size, log=log)
            if ds is None:
                raise OfflineRLError(f"unknown dataset {name!r}: offrl can generate {', '.join(buildable_names())}")
            return ds
        if prefix == "minari":
            return resolve_minari(rest, log=log)
        if prefix == "d4rl":
            from offrl.data import d4rl
            return d4rl.resolve_d4rl(rest, log=log)
        raise OfflineRLError(f"unknown dataset source {prefix!r} in {name!r}: use offrl:, minari: or d4rl:")
    for source in SEARCH_ORDER:
        ds = source(name, size, log)
        if ds is not None:
            return ds
    raise OfflineRLError(f"unknown dataset {name!r}: not a local D4RL file or Minari dataset, and offrl can "
                         f"generate only {', '.join(buildable_names())}")


def _bare_d4rl(name, size, log):
    from offrl.data import d4rl
    return d4rl.resolve_d4rl(name, log=log, missing_ok=True)


def _bare_minari(name, size, log):
    if "/" not in name:
        return None
    import minari
    if name not in minari.list_local_datasets():
        return None
    return resolve_minari(name, log=log)


def _bare_generated(name, size, log):
    return resolve_generated(name, size=size, log=log)


# A bare name: the user's own D4RL file first (it is the data papers report on), then a local Minari
# dataset, then the suite's generated dataset.
SEARCH_ORDER = [_bare_d4rl, _bare_minari, _bare_generated]


def buildable_names() -> list[str]:
    recipes.load_builtin()
    return [f"{r.family}-{lvl}" for r in recipes.RECIPES.values() for lvl in r.levels]
