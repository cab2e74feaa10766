"""One writer at a time (offrl/lock.py): a run folder refuses a second trainer; a cache entry and a generated
dataset are built once while a second process waits and then reuses them. Threads stand in for processes:
flock conflicts between two opens of a file even in one process."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest
import torch
from click.testing import CliRunner
from test_cache import StageConfig, toy_dataset
from test_trainer import _start

from offrl.cache import Cache
from offrl.cli import main
from offrl.lock import FileLock, Locked


def test_second_holder_is_refused_or_waits(tmp_path):
    first = FileLock(tmp_path / "x.lock").acquire()
    with pytest.raises(Locked, match=f"pid {os.getpid()} on "):
        FileLock(tmp_path / "x.lock").acquire()
    second, got = FileLock(tmp_path / "x.lock"), threading.Event()
    waiter = threading.Thread(target=lambda: (second.acquire(wait=True), got.set()))
    waiter.start()
    assert not got.wait(0.3), "a waiting acquire must block while the lock is held"
    first.release()
    assert got.wait(5) and second.waited
    second.release()
    waiter.join()
    with FileLock(tmp_path / "x.lock") as third:  # free again
        assert not third.waited


def test_run_folder_in_use_is_refused_in_one_line(tmp_path, data_dir):
    trainer = _start(tmp_path, "busy", steps=200)
    trainer.fit(stop_at=100)  # checkpoint at 100; fit() released the folder
    with FileLock(trainer.run_dir / ".lock"):  # another process trains in it
        out = CliRunner().invoke(main, ["run", "--resume", str(trainer.run_dir)])
    assert out.exit_code == 2 and out.output.count("\n") == 1
    assert f"is in use by pid {os.getpid()}" in out.output
    assert not (tmp_path / "busy").exists(), "the refused resume must write no result rows"
    done = CliRunner().invoke(main, ["run", "--resume", str(trainer.run_dir)])  # free: it resumes and finishes
    assert done.exit_code == 0, done.output
    assert "resumed" in done.output and (trainer.run_dir / "result.json").exists()


def test_concurrent_builders_of_one_cache_entry_build_once(tmp_path):
    cache, ds, calls = Cache(tmp_path / "cache"), toy_dataset(), []

    def slow_build():
        calls.append(threading.get_ident())
        time.sleep(0.5)
        return {"weight": torch.ones(2)}

    logs = [[], []]
    got = [None, None]

    def run(i):
        got[i] = cache.get_or_build(ds, "toy", StageConfig(), 0, slow_build, log=logs[i].append)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    threads[0].start()
    time.sleep(0.2)  # the first is building
    threads[1].start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert logs[1][0].startswith(f"waiting for pid {os.getpid()} on ") and "which is building toy" in logs[1][0]
    assert logs[1][1].startswith("reused toy from ")
    assert torch.equal(got[0]["weight"], got[1]["weight"])


def test_concurrent_first_uses_of_a_generated_dataset_build_it_once(tmp_path, monkeypatch):
    from offrl.data import recipes

    monkeypatch.setenv("OFFRL_DATA_DIR", str(tmp_path))
    recipes.load_builtin()
    logs, ids = [[], []], [None, None]

    def run(i):
        ids[i] = recipes.build(recipes.RECIPES["pointmass"], "medium", size=5_000, log=logs[i].append)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    threads[0].start()
    while not logs[0]:  # until the first has started building
        time.sleep(0.01)
    threads[1].start()
    for t in threads:
        t.join()
    assert ids[0] == ids[1] == "offrl/pointmass/medium-n5000-v0"
    assert [line.split()[0] for line in logs[0]] == ["building", "built"]
    assert logs[1] == [f"waiting for pid {os.getpid()} on {os.uname().nodename}, which is building {ids[0]}"]


def test_dataset_built_by_another_recipe_version_is_refused(tmp_path, monkeypatch):
    from offrl.data import recipes, resolve
    from offrl.errors import OfflineRLError

    monkeypatch.setenv("OFFRL_DATA_DIR", str(tmp_path))
    recipes.load_builtin()
    pointmass = recipes.RECIPES["pointmass"]
    quiet = lambda msg: None  # noqa: E731
    assert len(resolve("offrl:pointmass-medium", size=5_000, log=quiet)) == 5_000
    # The shipped behaviour policy changes (retrained) while the data on disk stays as built.
    monkeypatch.setattr(pointmass, "provenance", dict(pointmass.provenance, behaviour_policies={"medium.pt": "f00"}))
    with pytest.raises(OfflineRLError, match=r"built by another version of its recipe \(behaviour_policies differ"
                                             r".*offrl datasets build pointmass-medium --force"):
        resolve("offrl:pointmass-medium", size=5_000, log=quiet)
    path = recipes.dataset_path("offrl/pointmass/medium-n5000-v0") / "offrl_recipe.json"
    assert "behaviour_policies" not in json.loads(path.read_text()), "the refused dataset is left as it was"
