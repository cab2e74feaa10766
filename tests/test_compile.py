"""offrl/compile.py: a compiled step (sampling + update) gives the eager parameters; a failing compile falls back."""
import pytest
import torch

from offrl import compile as compiling
from offrl.errors import OfflineRLError
from conftest import train_agent

SMALL = {"hidden": [32, 32]}


@pytest.mark.parametrize("name", ["td3bc", "iql"])
def test_compiled_update_matches_eager(name, pointmass, monkeypatch):
    ds = pointmass("medium", 20_000)
    eager = train_agent(name, ds, 40, seeds=(0, 1), **SMALL).state_dict()
    lines = []
    monkeypatch.setattr(compiling, "UpdateRunner", _with_log(compiling.UpdateRunner, lines))
    compiled = train_agent(name, ds, 40, seeds=(0, 1), compile_mode="compile", **SMALL).state_dict()
    assert lines == []  # no fall-back to eager
    assert eager.keys() == compiled.keys()
    for key, value in eager.items():
        torch.testing.assert_close(compiled[key], value, rtol=1e-4, atol=1e-4, msg=key)


def test_failing_compile_restores_state_and_runs_eager(pointmass, monkeypatch):
    ds = pointmass("medium", 20_000)

    def broken_compile(fn, **kwargs):
        def half_done_then_fail(step):
            fn(step)  # the step's effects happen, as with a graph break before a failing graph
            raise RuntimeError("backend failed\nsecond line")
        return half_done_then_fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    lines = []
    monkeypatch.setattr(compiling, "UpdateRunner", _with_log(compiling.UpdateRunner, lines))
    fell_back = train_agent("td3bc", ds, 10, **SMALL, compile_mode="compile").state_dict()
    monkeypatch.undo()
    eager = train_agent("td3bc", ds, 10, **SMALL).state_dict()
    for key, value in eager.items():
        torch.testing.assert_close(fell_back[key], value, rtol=0, atol=0, msg=key)
    assert lines == ["compile mode compile failed at step 1 (RuntimeError: backend failed); continuing eager"]


def _with_log(cls, lines):
    class Logged(cls):
        def __init__(self, agent, buffer, mode, device, log=print):
            super().__init__(agent, buffer, mode, device, log=lines.append)
    return Logged


def test_modes_by_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compiling.resolve_mode("auto", cpu) == "eager"
    assert compiling.resolve_mode("auto", cuda) == "cudagraphs"
    assert compiling.resolve_mode("compile", cpu) == "compile"
    with pytest.raises(OfflineRLError, match="needs a CUDA device"):
        compiling.resolve_mode("cudagraphs", cpu)
    with pytest.raises(OfflineRLError, match="unknown compile mode"):
        compiling.resolve_mode("fast", cpu)
