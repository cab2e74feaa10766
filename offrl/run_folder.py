"""The run folder: its lock, run.yaml, checkpoints, eval.csv, the divergence record and the finished result.

A run folder holds run.yaml (offrl/run_spec.py), checkpoint.pt (models, optimisers, random-stream counters,
step, evaluation history and, in the online phase, its ring buffer, environment step and episode counters;
written atomically), eval.csv, tb/ (TensorBoard), diverged.txt if a loss became
NaN or infinite, and, once finished, result.json. While a process trains in it, it holds the folder's .lock
(offrl/lock.py): a second `--resume` stops with one line instead of writing beside the first. Only the holder
writes checkpoints, so a `.checkpoint.pt.*.tmp` found by the holder is a leftover of a killed process.

Run folders travel between machines and people, so everything read here is untrusted data: checkpoints load
with `weights_only=True` (tensors, numbers, strings and containers only, never code), and the plugin files a
run.yaml names are imported only when the user asks for them (`plugins_to_import`).

Recording the result is idempotent: rows already in the results table (the same run folder and seed) are not
appended again, so a run killed between its rows and result.json finishes on the next try without doubles.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from offrl import results
from offrl.atomic import atomic_path, write_text_atomic
from offrl.errors import OfflineRLError
from offrl.lock import FileLock, Locked
from offrl.run_spec import RunSpec, read_run_spec


def load_weights(path: Path, map_location="cpu", mmap: bool = False):
    """A checkpoint's content, loaded without running code; one line if it is not a checkpoint offrl wrote."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # a pickle that needs code (refused), a truncated or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise OfflineRLError(f"checkpoint {path} is corrupt or not a plain checkpoint (it is loaded as data "
                             f"only): {type(exc).__name__}: {first[:300]}") from None


def plugins_to_import(spec: RunSpec, run_dir, given=(), trust: bool = False) -> list[str]:
    """The plugin files of a run to import: each one the run names must have been passed again (`given`)
    or the user must trust the folder's plugins; otherwise one line says which file would run."""
    given_paths = {Path(p).resolve() for p in given}
    for plugin in spec.plugins:
        if not trust and Path(plugin).resolve() not in given_paths:
            raise OfflineRLError(f"{Path(run_dir) / 'run.yaml'} names the plugin file {plugin}, which would run as "
                                 f"your code: pass --plugin {plugin} again or --trust-plugins to allow it")
    return list(spec.plugins)


class RunFolder:
    def __init__(self, path):
        self.path = Path(path)
        self._lock = FileLock(self.path / ".lock")

    checkpoint_name = "checkpoint.pt"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / self.checkpoint_name

    def exists(self) -> bool:
        return (self.path / "run.yaml").exists()

    # ---- the lock ---------------------------------------------------------------------------------
    def lock(self) -> "RunFolder":
        """Hold the folder (a no-op while held), or one line if another process holds it. Leftover checkpoint
        temporaries are removed once held: only the holder writes them, so any found belong to a dead one."""
        try:
            self._lock.acquire()
        except Locked as holder:
            raise OfflineRLError(f"run folder {self.path} is in use by {holder}: wait for it to finish or stop it "
                                 "first") from None
        for tmp in self.path.glob(f".{self.checkpoint_name}.*.tmp"):
            tmp.unlink(missing_ok=True)
        return self

    def unlock(self) -> None:
        self._lock.release()

    # ---- run.yaml ---------------------------------------------------------------------------------
    def write_spec(self, spec: RunSpec) -> None:
        write_text_atomic(self.path / "run.yaml", spec.to_yaml())

    def read_spec(self) -> RunSpec:
        return read_run_spec(self.path)

    # ---- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self, map_location="cpu") -> dict | None:
        """The checkpoint's content (data only), or None if the run has none yet."""
        if not self.checkpoint_path.exists():
            return None
        state = load_weights(self.checkpoint_path, map_location)
        if not isinstance(state, dict) or not {"step", "agent", "buffer", "history"} <= set(state):
            raise OfflineRLError(f"checkpoint {self.checkpoint_path} is not a run checkpoint offrl wrote")
        return state

    def check_room_for(self, nbytes: int) -> None:
        """One line if the folder's disk cannot take a checkpoint of `nbytes` (and its temporary copy)."""
        free = shutil.disk_usage(self.path if self.path.exists() else _existing_parent(self.path)).free
        if free < 2 * nbytes:
            raise OfflineRLError(f"not enough free disk for checkpoints in {self.path}: {free / 1e6:.1f} MB free, "
                                 f"a checkpoint needs about {nbytes / 1e6:.1f} MB (twice that while it is written)")

    # ---- evaluations, divergence, result ----------------------------------------------------------
    def write_evaluations(self, seeds, history: list[dict]) -> None:
        online = any("env_step" in rec for rec in history)  # a run with an online phase: its env steps too
        lines = ["step,seed,mean_return,normalized_score" + (",env_step" if online else "")]
        for rec in history:
            for seed, ret, sc in zip(seeds, rec["returns"], rec["scores"]):
                lines.append(f"{rec['step']},{seed},{ret:.6g},{sc:.6g}"
                             + (f",{rec.get('env_step', 0)}" if online else ""))
        write_text_atomic(self.path / "eval.csv", "\n".join(lines) + "\n")

    @property
    def diverged_path(self) -> Path:
        return self.path / "diverged.txt"

    def record_divergence(self, message: str) -> None:
        write_text_atomic(self.diverged_path, message + "\n")

    def divergence(self) -> str | None:
        try:
            return self.diverged_path.read_text().strip() or "diverged"
        except OSError:
            return None

    @property
    def result_path(self) -> Path:
        return self.path / "result.json"

    def finished(self) -> bool:
        return self.result_path.exists()

    def record_result(self, rows: list[dict], results_table) -> int:
        """Append the rows not yet in `results_table` (same run folder and seed), then write result.json.
        Returns how many rows were appended."""
        appended = results.append_rows_once(results_table, rows, same_run=self.same_run)
        write_text_atomic(self.result_path, json.dumps(rows, indent=2))
        self.diverged_path.unlink(missing_ok=True)
        return appended

    def same_run(self, run_dir: str) -> bool:
        """Whether a row's run_dir names this folder (rows keep the path as the run was started with)."""
        try:
            return Path(run_dir).resolve() == self.path.resolve() or os.path.samefile(run_dir, self.path)
        except OSError:
            return False


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_results_table(path) -> None:
    """One line, before any training, if the results table cannot be appended to: a folder, a read-only file,
    or a folder that cannot be created or written."""
    path = Path(path)
    if path.is_dir():
        raise OfflineRLError(f"results table {path} is a folder: name a CSV file with --results")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise OfflineRLError(f"results table {path} is not writable")
        return
    parent = _existing_parent(path.parent)
    if not parent.is_dir():
        raise OfflineRLError(f"results table {path} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OfflineRLError(f"results table {path} cannot be created: {parent} is not writable")
