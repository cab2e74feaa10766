"""Minari datasets -> flat transitions, through the minari package.

Minari stores T+1 observations for T actions per episode: observations = obs[:-1], next = obs[1:]
(reading obs alongside actions without this cut shifts every later episode by one step).
`terminals` are Minari's terminations (bootstrap stops); `timeouts` are its truncations, and an episode that
ends with neither (a recording cut short) gets a timeout on its last step, so that episodes stay apart.
Dict observations are flattened in sorted key order; the layout is recorded in the provenance.

Episode `infos` become extra per-transition fields, one per numeric leaf, named by its key path
("infos/cost", "infos/state/qpos"). Minari 0.5's DataCollector records the reset's info and then one per step,
T+1 entries: like observations, "infos/k" = info[:-1] (about s_t) and "next_infos/k" = info[1:] (what step t
returned: a cost, a success flag). A leaf of T entries (buffers written by hand) is "infos/k" as it is. A leaf
that is not numeric, or not in every episode with one shape and one length rule, is left out (the metadata
lists it under `infos_left_out`).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from offrl.errors import OfflineRLError


@contextmanager
def minari_root(root: str | os.PathLike | None):
    """Point minari at `root` (its MINARI_DATASETS_PATH) for the duration of the block."""
    if root is None:
        yield
        return
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def flatten_observation(obs) -> tuple[np.ndarray, list]:
    """A Box array stays as it is; a dict of arrays [T, ...] becomes [T, sum of sizes] in sorted key order."""
    if isinstance(obs, dict):
        parts, layout = [], []
        for key in sorted(obs):
            sub, sub_layout = flatten_observation(obs[key])
            parts.append(sub.reshape(len(sub), -1))
            layout.append((key, parts[-1].shape[1], sub_layout))
        return np.concatenate(parts, axis=1), layout
    arr = np.asarray(obs)
    return arr.reshape(len(arr), -1), []


def info_leaves(infos, prefix: str = "infos") -> dict[str, np.ndarray]:
    """{"infos/a/b": array} for every leaf of a (nested) info dict."""
    leaves = {}
    for key, value in (infos or {}).items():
        if isinstance(value, dict):
            leaves.update(info_leaves(value, f"{prefix}/{key}"))
        else:
            leaves[f"{prefix}/{key}"] = np.asarray(value)
    return leaves


def info_fields(infos, T: int) -> dict[str, np.ndarray | None]:
    """An episode's per-transition info fields (see the module docstring); None for a leaf that fits neither rule."""
    fields = {}
    for key, value in info_leaves(infos).items():
        if value.dtype.kind not in "biuf" or value.ndim == 0:
            fields[key] = None
        elif len(value) == T + 1:
            fields[key], fields["next_" + key] = value[:-1], value[1:]
        elif len(value) == T:
            fields[key] = value
        else:
            fields[key] = None
    return fields


def episodes_to_transitions(episodes) -> tuple[dict, list, list]:
    """Episodes with T+1 observations -> (flat transition arrays with the info fields, the observation
    layout, the info fields left out)."""
    cols = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    layout: list = []
    infos: list[dict] = []
    for ep in episodes:
        obs, layout = flatten_observation(ep.observations)
        T = len(ep.actions)
        if len(obs) != T + 1:
            raise OfflineRLError(f"Minari episode {ep.id} has {len(obs)} observations for {T} actions "
                                 "(expected T+1)")
        cols["observations"].append(obs[:-1])
        cols["next_observations"].append(obs[1:])
        cols["actions"].append(np.asarray(ep.actions).reshape(T, -1))
        cols["rewards"].append(np.asarray(ep.rewards).reshape(T))
        terminations = np.asarray(ep.terminations, bool).reshape(T)
        truncations = np.asarray(ep.truncations, bool).reshape(T).copy()
        if T and not (terminations[-1] or truncations[-1]):
            truncations[-1] = True  # cut short: the next episode's first step is not this one's successor
        cols["terminals"].append(terminations)
        cols["timeouts"].append(truncations)
        infos.append(info_fields(getattr(ep, "infos", None), T))
    if not cols["rewards"]:
        raise OfflineRLError("Minari dataset has no episodes")
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    left_out = set()
    for key in set().union(*infos):
        parts = [fields.get(key) for fields in infos]
        if any(p is None for p in parts) or len({(p.shape[1:], p.dtype) for p in parts}) > 1:
            left_out.add(key)
    # A leaf with T+1 entries in some episodes and T in others has no next_ part everywhere: both go.
    left_out |= {k[len("next_"):] for k in left_out if k.startswith("next_")}
    arrays.update({k: np.concatenate([fields[k] for fields in infos]) for k in set().union(*infos) - left_out})
    return arrays, layout, sorted(left_out)


def load_minari(dataset_id: str, root: str | os.PathLike | None = None):
    """(arrays, metadata, minari dataset) of a local Minari dataset; never downloads."""
    import minari

    with minari_root(root):
        try:
            ds = minari.load_dataset(dataset_id, download=False)
        except Exception as exc:  # minari raises several types for missing/corrupt data
            where = root or os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
            raise OfflineRLError(f"cannot read Minari dataset {dataset_id} in {where}: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        try:
            arrays, layout, infos_left_out = episodes_to_transitions(ds.iterate_episodes())
        except OfflineRLError:
            raise
        except Exception as exc:
            raise OfflineRLError(f"Minari dataset {dataset_id} is corrupt: {type(exc).__name__}: {exc}") from None
        meta = dict(ds.storage.metadata)
        meta["observation_layout"] = layout
        meta["infos_left_out"] = infos_left_out
        meta["path"] = str(Path(ds.storage.data_path).parent)
    return arrays, meta, ds
