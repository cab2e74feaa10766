"""The thread policy (offrl/cpu_load.py, offrl/machine.py): which OpenMP wait policy and how many threads offrl
picks from the cores other work leaves free, and that a run's second thread goes when another job arrives."""
from __future__ import annotations

import pytest
import torch

from offrl import cpu_load, machine


def test_cores_left_counts_a_core_taken_from_a_quarter_of_its_time():
    assert [cpu_load.cores_left(2, busy) for busy in (0.0, 0.2, 0.3, 1.0, 1.3, 6.0)] == [2, 2, 1, 1, 1, 1]
    assert [cpu_load.cores_left(4, busy) for busy in (0.1, 1.2, 2.9)] == [4, 3, 1]


@pytest.mark.parametrize("free, policy, env", [(2, "spin", {"GOMP_SPINCOUNT": str(cpu_load.SPIN_COUNT)}),
                                               (1, "passive", {"OMP_WAIT_POLICY": "PASSIVE"})])
def test_wait_policy_spins_only_with_a_free_core_for_a_second_thread(monkeypatch, free, policy, env):
    monkeypatch.setattr(cpu_load, "_measured", free)
    environ = {}
    assert cpu_load.choose_wait_policy(environ) == policy
    assert {k: v for k, v in environ.items() if k != cpu_load.CHOSEN_BY_OFFRL} == env
    assert cpu_load.wait_policy(environ) == policy


def test_a_child_process_decides_again_instead_of_inheriting_its_parents_choice(monkeypatch):
    monkeypatch.setattr(cpu_load, "_measured", 1)
    environ = {}
    assert cpu_load.choose_wait_policy(environ) == "passive"  # the parent started on a busy machine
    child = dict(environ)  # what a subprocess inherits
    monkeypatch.setattr(cpu_load, "_measured", 2)  # the child starts when the cores are free
    assert cpu_load.choose_wait_policy(child) == "spin"
    assert "OMP_WAIT_POLICY" not in child
    child["OMP_WAIT_POLICY"] = "ACTIVE"  # changed by the user after offrl chose: the user's now
    assert cpu_load.choose_wait_policy(child) == "user"


@pytest.mark.parametrize("user", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10"}])
def test_a_users_own_wait_policy_wins(monkeypatch, user):
    monkeypatch.setattr(cpu_load, "_measured", 2)
    environ = dict(user)
    assert cpu_load.choose_wait_policy(environ) == "user"
    assert environ == user


@pytest.mark.parametrize("policy, free, seeds, threads", [("spin", 2, 1, 2), ("spin", 2, 8, 2),
                                                          ("passive", 2, 1, 1), ("passive", 2, 4, 2),
                                                          ("passive", 1, 4, 1)])
def test_automatic_threads(monkeypatch, policy, free, seeds, threads):
    monkeypatch.setattr(machine, "free_cores", lambda: free)
    monkeypatch.setattr(machine, "wait_policy", lambda: policy)
    assert machine.auto_threads(seeds) == threads


class FakeWatch:
    def __init__(self, busy):
        self.cpus, self.busy = [0, 1], busy

    def busy_cores(self):
        return self.busy.pop(0)


def test_thread_watch_gives_a_thread_to_a_job_that_arrives_and_takes_it_back(monkeypatch):
    monkeypatch.setattr(machine, "wait_policy", lambda: "spin")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        watch = machine.ThreadWatch(None, 2, every_s=0.0)
        watch.watch = FakeWatch([0.05, 0.9, 1.0, 0.1])
        seen = []
        for _ in range(4):
            watch()
            seen.append(torch.get_num_threads())
        assert seen == [2, 1, 1, 2]
        assert not machine.ThreadWatch(2, 2).enabled  # --threads given: the user's choice stays
        monkeypatch.setattr(machine, "wait_policy", lambda: "passive")
        assert not machine.ThreadWatch(None, 2).enabled
    finally:
        torch.set_num_threads(before)


def test_others_watch_reads_this_machine():
    watch = cpu_load.OthersWatch()
    sum(range(200_000))  # some CPU time of this process's own, which is not counted as others' work
    busy = watch.busy_cores()
    assert busy is None or 0.0 <= busy <= len(watch.cpus)
