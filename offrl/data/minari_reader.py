"""Minari datasets -> flat transitions, through the minari package.

Minari stores T+1 observations for T actions per episode: observations = obs[:-1], next = obs[1:]
(reading obs alongside actions without this cut shifts every later episode: specs/peer-systems.md §5.5).
`terminals` are Minari's terminations (bootstrap stops); `timeouts` are its truncations.
Dict observations are flattened in sorted key order; the layout is recorded in the provenance.
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


def episodes_to_transitions(episodes) -> tuple[dict, list]:
    """Episodes with T+1 observations -> flat transition arrays (and the observation layout)."""
    cols = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    layout: list = []
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
        cols["terminals"].append(np.asarray(ep.terminations).reshape(T))
        cols["timeouts"].append(np.asarray(ep.truncations).reshape(T))
    if not cols["rewards"]:
        raise OfflineRLError("Minari dataset has no episodes")
    return {k: np.concatenate(v) for k, v in cols.items()}, layout


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
            arrays, layout = episodes_to_transitions(ds.iterate_episodes())
        except OfflineRLError:
            raise
        except Exception as exc:
            raise OfflineRLError(f"Minari dataset {dataset_id} is corrupt: {type(exc).__name__}: {exc}") from None
        meta = dict(ds.storage.metadata)
        meta["observation_layout"] = layout
        meta["path"] = str(Path(ds.storage.data_path).parent)
    return arrays, meta, ds
