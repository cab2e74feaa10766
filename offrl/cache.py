"""The cache of pre-training artefacts: dynamics ensembles, reverse models, anchor seekers, base policies.

A pre-training stage's output depends only on the data, the stage, the stage's config and a seed, so it is
stored once under that key and reused by every later run and by every agent that asks for the same thing
(one forward dynamics ensemble per dataset serves MOPO, MOBILE, COMBO, CSVE and COCOA).

Layout, under cache_dir() (<data root>/cache, see offrl/paths.py):

    stages/<stage>/<dataset fingerprint[:16]>/<config hash[:16]>-seed<seed>/
        artifact.pt          torch.save of the artefact (a dict of tensors, numbers, strings, lists)
        artifact.pt.sha256   its SHA-256, written after the artefact
        meta.json            the full key (stage, dataset name, fingerprint, config and its hash, seed),
                             size, date and build time; written last, so it marks a complete entry
        progress.pt          only while a resumable build runs or after it was killed: its saved state
        pending.json         beside it: the entry's key, so that `offrl cache list` can say what is under way

One process builds an entry at a time: a second one that wants it (another seed's run on the same
dataset) waits for the first, says so, and then reuses what the first stored.

Every file is written atomically (temporary file + rename, offrl/atomic.py). An entry is trusted only if
meta.json is readable and names the same key, the checksum matches the artefact's bytes, and the
artefact loads with `torch.load(weights_only=True)` (no code runs on load). Anything else (a crash
between writes, a truncated or bit-flipped file) is logged and rebuilt, never used.

The dataset fingerprint is the SHA-256 of every array of the dataset (field names, dtypes, shapes and all
bytes), so it changes when any single value changes. Hashing everything is cheap next to what is cached:
about 0.15 s for 1 M transitions of 40 floats. The dataset's name is not part of the fingerprint (the
same data under two names shares artefacts); it is recorded in meta.json for `list_entries`.

`Cache.list_entries()` and `Cache.clear(stage=, dataset=)` back `offrl cache list` and `offrl cache clear`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from offrl.atomic import atomic_path, file_sha256, write_text_atomic
from offrl.config import config_hash
from offrl.data.dataset import FIELDS
from offrl.errors import OfflineRLError
from offrl.lock import FileLock
from offrl.paths import cache_dir

ARTIFACT, CHECKSUM, META = "artifact.pt", "artifact.pt.sha256", "meta.json"
PROGRESS = "progress.pt"  # a resumable build's own state while it runs (see get_or_build)
PENDING = "pending.json"  # the key of a resumable build under way, so `cache list` can name it
LOCKS = ".locks"  # <root>/.locks/<stage>-<fingerprint>-<entry>.lock: one builder per entry (offrl/lock.py)
_STAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FINGERPRINT_VERSION = b"offrl-dataset-fingerprint-v1"

Log = Callable[[str], None]


def dataset_fingerprint(dataset) -> str:
    """SHA-256 (hex) of the dataset's transition arrays: names, dtypes, shapes and every byte."""
    h = hashlib.sha256(_FINGERPRINT_VERSION)
    for key in FIELDS:
        arr = np.ascontiguousarray(getattr(dataset, key))
        h.update(f"|{key}:{arr.dtype.str}:{arr.shape}|".encode())
        h.update(arr.view(np.uint8) if arr.dtype == bool else arr)
    return h.hexdigest()


def _jsonable(config) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if isinstance(config, dict):
        return {str(k): _jsonable(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [_jsonable(v) for v in config]
    if isinstance(config, (str, int, float, bool)) or config is None:
        return config
    if isinstance(config, np.generic):
        return config.item()
    return str(config)


def _check_storable(obj, where: str = "artifact") -> None:
    """Only what torch.load(weights_only=True) reads back: tensors, numbers, strings, None, containers."""
    if isinstance(obj, (torch.Tensor, str, int, float, bool)) or obj is None:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise OfflineRLError(f"cache: {where} has a key of type {type(k).__name__}; use str or int")
            _check_storable(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_storable(v, f"{where}[{i}]")
        return
    raise OfflineRLError(f"cache: {where} is a {type(obj).__name__}; an artefact may hold only tensors, "
                         "numbers, strings, None, lists, tuples and dicts (convert numpy arrays to tensors)")


class _Corrupt(Exception):
    pass


@dataclass
class CacheEntry:
    """One stored artefact, as `offrl cache list` shows it."""
    stage: str
    dataset: str          # the dataset's name when it was built ("?" if meta.json is unreadable)
    fingerprint: str
    config_hash: str
    seed: int | None
    size_bytes: int
    created: str          # ISO date-time (UTC) of the build
    path: Path
    complete: bool        # meta.json readable; an incomplete entry is rebuilt on its next use


class Cache:
    """Artefacts of pre-training stages keyed by (dataset fingerprint, stage, config hash, seed)."""

    def __init__(self, root: str | Path | None = None, log: Log = print):
        self.root = Path(root) if root is not None else cache_dir() / "stages"
        self.log = log

    def entry_dir(self, dataset, stage: str, config, seed: int) -> Path:
        return self._dir(stage, dataset_fingerprint(dataset), config_hash(config, digits=64), seed)

    def _dir(self, stage: str, fingerprint: str, chash: str, seed: int) -> Path:
        if not _STAGE_RE.match(stage):
            raise OfflineRLError(f"cache: stage name {stage!r} must be letters, digits, '_', '.', '-'")
        return self.root / stage / fingerprint[:16] / f"{chash[:16]}-seed{int(seed)}"

    def get_or_build(self, dataset, stage: str, config, seed: int, build_fn: Callable[..., Any],
                     log: Log | None = None, map_location="cpu", resumable: bool = False) -> Any:
        """The artefact of `stage` for (dataset, config, seed): loaded if a sound entry exists, else
        `build_fn()` is called, its result stored, and returned. A reused artefact is loaded onto
        `map_location`; a freshly built one is returned as build_fn made it.

        resumable: call `build_fn(progress_file)` instead, a path inside the entry's folder where a long
        build keeps its own resumable state; a killed build finds it there next time, and it is deleted
        once the artefact is stored. `offrl cache list` shows such an entry as incomplete."""
        log = log or self.log
        fingerprint, chash = dataset_fingerprint(dataset), config_hash(config, digits=64)
        path = self._dir(stage, fingerprint, chash, seed)
        found = self._reuse(path, stage, fingerprint, chash, seed, map_location, log)
        if found is not None:
            return found[0]
        lock = FileLock(self.root / LOCKS / f"{stage}-{path.parent.name}-{path.name}.lock")
        lock.acquire(wait=True, on_wait=lambda holder: log(f"waiting for {holder}, which is building {stage} "
                                                            f"in {path}"))
        try:
            if lock.waited:  # the other process has stored it (or failed, and this one builds)
                found = self._reuse(path, stage, fingerprint, chash, seed, map_location, log)
                if found is not None:
                    return found[0]
            return self._build(path, dataset, stage, fingerprint, chash, config, seed, build_fn, log, resumable)
        finally:
            lock.release()

    def _reuse(self, path: Path, stage, fingerprint, chash, seed, map_location, log) -> tuple[Any] | None:
        """(artifact,) if a sound entry is stored at `path`, else None (a corrupt one is reported)."""
        if any((path / name).exists() for name in (ARTIFACT, CHECKSUM, META)):
            try:
                artifact = self._load(path, stage, fingerprint, chash, seed, map_location)
            except _Corrupt as exc:
                log(f"cache entry {path} of {stage} is corrupt ({exc}): ignoring it and rebuilding {stage}")
            else:
                log(f"reused {stage} from {path}")
                return (artifact,)
        return None

    def _build(self, path: Path, dataset, stage, fingerprint, chash, config, seed, build_fn, log, resumable):
        key = dict(stage=stage, dataset=getattr(dataset, "name", "?"), dataset_version=getattr(dataset, "version", ""),
                   fingerprint=fingerprint, config_hash=chash, config=_jsonable(config), seed=int(seed))
        start = time.perf_counter()
        if resumable:
            write_text_atomic(path / PENDING, json.dumps(key, indent=1, sort_keys=True) + "\n")
            artifact = build_fn(path / PROGRESS)
        else:
            artifact = build_fn()
        seconds = time.perf_counter() - start
        _check_storable(artifact)
        meta = dict(key, build_seconds=round(seconds, 3),
                    created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        self._store(path, artifact, meta)
        for name in (PROGRESS, PENDING):
            (path / name).unlink(missing_ok=True)
        log(f"built {stage} in {seconds:.1f}s, stored in {path}")
        return artifact

    def _store(self, path: Path, artifact, meta: dict) -> None:
        path.mkdir(parents=True, exist_ok=True)
        # Drop the completion marker first: a crash below leaves an entry that is rebuilt, not trusted.
        (path / META).unlink(missing_ok=True)
        with atomic_path(path / ARTIFACT) as tmp:
            torch.save(artifact, tmp)
        digest = file_sha256(path / ARTIFACT)
        write_text_atomic(path / CHECKSUM, f"{digest}  {ARTIFACT}\n")
        meta = dict(meta, sha256=digest, size_bytes=(path / ARTIFACT).stat().st_size)
        write_text_atomic(path / META, json.dumps(meta, indent=1, sort_keys=True) + "\n")

    def _load(self, path: Path, stage, fingerprint, chash, seed, map_location):
        try:
            meta = json.loads((path / META).read_text())
        except FileNotFoundError:
            raise _Corrupt("no meta.json: the write was interrupted") from None
        except (OSError, ValueError) as exc:
            raise _Corrupt(f"meta.json unreadable: {exc}") from None
        if (meta.get("stage"), meta.get("fingerprint"), meta.get("config_hash"), meta.get("seed")) != (
                stage, fingerprint, chash, int(seed)):
            raise _Corrupt("meta.json names a different key")
        try:
            expected = (path / CHECKSUM).read_text().split()[0]
        except (OSError, IndexError):
            raise _Corrupt("checksum file missing or empty") from None
        try:
            actual = file_sha256(path / ARTIFACT)
        except OSError as exc:
            raise _Corrupt(f"artifact unreadable: {exc}") from None
        if actual != expected:
            raise _Corrupt("checksum mismatch")
        try:
            return torch.load(path / ARTIFACT, map_location=map_location, weights_only=True)
        except Exception as exc:  # any failure to unpickle means the bytes are not what we wrote
            raise _Corrupt(f"artifact does not load: {type(exc).__name__}") from None

    # ---- for `offrl cache list` / `offrl cache clear`
    def list_entries(self) -> list[CacheEntry]:
        entries = []
        if not self.root.exists():
            return entries
        for path in sorted(p for p in self.root.glob("*/*/*") if p.is_dir()):
            size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
            try:
                meta = json.loads((path / META).read_text())
                complete = True
            except (OSError, ValueError):
                meta, complete = {}, False
                try:  # a resumable build under way names itself
                    meta = json.loads((path / PENDING).read_text())
                except (OSError, ValueError):
                    pass
            created = meta.get("created") or _dt.datetime.fromtimestamp(
                path.stat().st_mtime, _dt.timezone.utc).isoformat(timespec="seconds")
            seed = meta.get("seed")
            if seed is None:
                m = re.search(r"-seed(-?\d+)$", path.name)
                seed = int(m.group(1)) if m else None
            entries.append(CacheEntry(stage=meta.get("stage", path.parent.parent.name),
                                      dataset=meta.get("dataset", "?"),
                                      fingerprint=meta.get("fingerprint", path.parent.name),
                                      config_hash=meta.get("config_hash", path.name.split("-seed")[0]),
                                      seed=seed, size_bytes=size, created=created, path=path,
                                      complete=complete))
        return entries

    def clear(self, stage: str | None = None, dataset: str | None = None) -> list[CacheEntry]:
        """Remove the entries of `stage` and/or `dataset` (a dataset name or a fingerprint prefix); with
        neither, remove everything. Returns the removed entries."""
        for what, value in (("stage", stage), ("dataset", dataset)):
            if value is not None and not value.strip():  # "" matches every fingerprint: never mean "everything"
                raise OfflineRLError(f"--{what} is empty: name a {what} (or leave the option out to clear all)")
        removed = []
        for entry in self.list_entries():
            if stage is not None and entry.stage != stage:
                continue
            if dataset is not None and entry.dataset != dataset and not entry.fingerprint.startswith(dataset):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry)
            for parent in (entry.path.parent, entry.path.parent.parent):  # drop emptied folders
                try:
                    parent.rmdir()
                except OSError:
                    break
        return removed


__all__ = ["Cache", "CacheEntry", "dataset_fingerprint"]
