"""The pre-training artefact cache: miss builds, hit reuses, any key change misses, corruption rebuilds."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from offrl.cache import Cache, dataset_fingerprint
from offrl.config import config_hash
from offrl.data import from_arrays
from offrl.errors import OfflineRLError


def toy_dataset(name="toy-data", n=64, seed=0, **changes):
    rng = np.random.default_rng(seed)
    arrays = dict(observations=rng.normal(size=(n, 3)), actions=rng.uniform(-1, 1, size=(n, 2)),
                  rewards=rng.normal(size=n), next_observations=rng.normal(size=(n, 3)),
                  terminals=np.zeros(n, bool), timeouts=np.zeros(n, bool))
    arrays.update(changes)
    return from_arrays(name, arrays, family="pointmass", source="offrl", version="test")


@dataclass
class StageConfig:
    width: int = 8
    lr: float = 1e-3
    dims: tuple[int, ...] = (4, 4)


class Builder:
    """A build_fn that counts its calls and returns a small artefact."""

    def __init__(self, value=1.0):
        self.calls, self.value = 0, value

    def __call__(self):
        self.calls += 1
        return {"weight": torch.full((3, 2), self.value), "report": {"epochs": 3, "elites": [0, 2]}}


@pytest.fixture
def cache(tmp_path):
    return Cache(tmp_path / "cache", log=lambda msg: None)


def test_miss_builds_and_stores_then_hit_reuses(cache):
    ds, build, logs = toy_dataset(), Builder(), []
    art = cache.get_or_build(ds, "toy", StageConfig(), 0, build, log=logs.append)
    assert build.calls == 1 and torch.equal(art["weight"], torch.ones(3, 2))
    assert logs[-1].startswith("built toy in ")
    path = cache.entry_dir(ds, "toy", StageConfig(), 0)
    assert sorted(p.name for p in path.iterdir()) == ["artifact.pt", "artifact.pt.sha256", "meta.json"]
    meta = json.loads((path / "meta.json").read_text())
    assert meta["dataset"] == "toy-data" and meta["seed"] == 0 and meta["config"]["dims"] == [4, 4]

    again = cache.get_or_build(ds, "toy", StageConfig(), 0, build, log=logs.append)
    assert build.calls == 1, "a hit must not call build_fn"
    assert logs[-1] == f"reused toy from {path}"
    assert torch.equal(again["weight"], art["weight"]) and again["report"] == art["report"]
    # A Dataset object rebuilt from the same arrays hits the same entry.
    cache.get_or_build(toy_dataset(), "toy", StageConfig(), 0, build)
    assert build.calls == 1


@pytest.mark.parametrize("key", ["config", "seed", "stage", "data"])
def test_any_key_change_misses(cache, key):
    ds, build = toy_dataset(), Builder()
    cache.get_or_build(ds, "toy", StageConfig(), 0, build)
    args = dict(dataset=ds, stage="toy", config=StageConfig(), seed=0)
    args.update({"config": dict(config=StageConfig(lr=3e-4)), "seed": dict(seed=1), "stage": dict(stage="other"),
                 "data": dict(dataset=toy_dataset(seed=1))}[key])
    cache.get_or_build(args["dataset"], args["stage"], args["config"], args["seed"], build)
    assert build.calls == 2
    assert len(cache.list_entries()) == 2


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _garbage_with_matching_checksum(path):
    import hashlib
    path.write_bytes(b"not a torch file")
    (path.parent / "artifact.pt.sha256").write_text(hashlib.sha256(b"not a torch file").hexdigest() + "\n")


def _drop_meta(path):
    (path.parent / "meta.json").unlink()


def _drop_checksum(path):
    (path.parent / "artifact.pt.sha256").unlink()


@pytest.mark.parametrize("damage,reason", [(_truncate, "checksum mismatch"), (_flip, "checksum mismatch"),
                                           (_garbage_with_matching_checksum, "does not load"),
                                           (_drop_meta, "interrupted"), (_drop_checksum, "checksum file")])
def test_corrupt_entry_is_rebuilt_never_trusted(cache, damage, reason):
    ds, logs = toy_dataset(), []
    cache.get_or_build(ds, "toy", StageConfig(), 0, Builder(1.0))
    path = cache.entry_dir(ds, "toy", StageConfig(), 0)
    damage(path / "artifact.pt")
    rebuild = Builder(2.0)
    art = cache.get_or_build(ds, "toy", StageConfig(), 0, rebuild, log=logs.append)
    assert rebuild.calls == 1 and torch.equal(art["weight"], torch.full((3, 2), 2.0))
    assert any("corrupt" in line and reason in line and str(path) in line for line in logs), logs
    assert logs[-1].startswith("built toy in ")
    # The rebuilt entry is sound again.
    later = Builder(3.0)
    assert torch.equal(cache.get_or_build(ds, "toy", StageConfig(), 0, later)["weight"], art["weight"])
    assert later.calls == 0


def test_list_and_clear(cache):
    x, y = toy_dataset("x-data"), toy_dataset("y-data", seed=1)
    for ds in (x, y):
        for stage in ("dynamics", "anchor_seeker"):
            cache.get_or_build(ds, stage, StageConfig(), 0, Builder())
    cache.get_or_build(x, "dynamics", StageConfig(), 1, Builder())
    entries = cache.list_entries()
    assert len(entries) == 5
    e = next(e for e in entries if e.stage == "dynamics" and e.dataset == "x-data" and e.seed == 1)
    assert e.config_hash == config_hash(StageConfig(), digits=64) and e.fingerprint == dataset_fingerprint(x)
    assert e.size_bytes > 0 and e.created[:4].isdigit() and e.complete

    removed = cache.clear(stage="anchor_seeker")
    assert {(r.stage, r.dataset) for r in removed} == {("anchor_seeker", "x-data"), ("anchor_seeker", "y-data")}
    assert not any(e.stage == "anchor_seeker" for e in cache.list_entries())
    assert not (cache.root / "anchor_seeker").exists()
    assert len(cache.clear(dataset="y-data")) == 1
    assert {(e.dataset, e.seed) for e in cache.list_entries()} == {("x-data", 0), ("x-data", 1)}
    assert len(cache.clear(dataset=dataset_fingerprint(x)[:10])) == 2
    assert cache.list_entries() == [] and cache.clear() == []


def test_fingerprint_changes_with_one_value():
    base = toy_dataset()
    assert dataset_fingerprint(base) == dataset_fingerprint(toy_dataset("renamed"))
    for field in ("observations", "actions", "rewards", "next_observations"):
        arr = getattr(base, field).copy()
        arr.reshape(-1)[37] = np.nextafter(arr.reshape(-1)[37], np.float32(np.inf))  # the smallest change
        assert dataset_fingerprint(toy_dataset(**{field: arr})) != dataset_fingerprint(base), field
    term = base.terminals.copy()
    term[5] = True
    assert dataset_fingerprint(toy_dataset(terminals=term)) != dataset_fingerprint(base)


def test_rejects_unstorable_artifacts_and_bad_stage_names(cache):
    ds = toy_dataset()
    with pytest.raises(OfflineRLError, match="numpy"):
        cache.get_or_build(ds, "toy", StageConfig(), 0, lambda: {"w": np.zeros(3)})
    with pytest.raises(OfflineRLError, match="stage name"):
        cache.get_or_build(ds, "../escape", StageConfig(), 0, Builder())


def test_default_root_is_under_the_data_dir(data_dir):
    assert Cache().root == data_dir / "cache" / "stages"
