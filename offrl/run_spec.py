"""The run specification: what run.yaml holds, as a typed value, and the loader that checks its shape.

run.yaml is everything needed to rebuild a run (agent, dataset, seeds, resolved configs, where its rows go).
It is written once when the run starts and read on every resume, by `offrl runs` and by `offrl bench --from`;
a run folder may come from another machine or another person, so the loader treats it as untrusted input:
a file of the wrong shape is one OfflineRLError line, never a KeyError deep in the trainer. The keys on disk
are the ones offrl has always written, so older run folders still load.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from offrl.errors import OfflineRLError


@dataclass
class RunSpec:
    agent: str
    dataset: str
    seeds: list[int]
    train: dict  # TrainConfig's fields (offrl/trainer.py), as a mapping
    agent_config: dict  # the agent's resolved Config, as a mapping
    results: str  # the results table the run appends its rows to
    dataset_size: int | None = None
    device: str = "auto"
    threads: int = 0
    compile: str = "auto"
    plugins: list[str] = field(default_factory=list)  # files that registered the agent (absolute paths)
    offrl_version: str = ""
    git_revision: str = ""  # the code revision the run started under
    created: str = ""

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


# (field, accepted types, what the error calls it); None is accepted only where the default is None.
_SHAPE = {
    "agent": ((str,), "a name"), "dataset": ((str,), "a name"), "seeds": ((list,), "a list of integers"),
    "train": ((dict,), "a mapping"), "agent_config": ((dict,), "a mapping"), "results": ((str,), "a path"),
    "dataset_size": ((int, type(None)), "an integer"), "device": ((str,), "a device name"),
    "threads": ((int,), "an integer"), "compile": ((str,), "a mode name"), "plugins": ((list,), "a list of paths"),
    "offrl_version": ((str,), "a string"), "git_revision": ((str,), "a string"), "created": ((str,), "a string"),
}


def parse_run_spec(data, where: str) -> RunSpec:
    """A RunSpec from run.yaml's parsed content, or OfflineRLError naming `where` and what is wrong."""
    if not isinstance(data, dict):
        raise OfflineRLError(f"{where} is not a run.yaml offrl wrote: it holds no mapping of keys")
    fields = {f.name: f for f in dataclasses.fields(RunSpec)}
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise OfflineRLError(f"{where} is not a run.yaml offrl wrote: it lacks {', '.join(missing)}")
    values = {}
    for key, value in data.items():
        if key not in fields:
            continue  # a key a newer offrl wrote: kept out of this version's spec, harmless
        if isinstance(value, (int, float)) and key in ("offrl_version", "git_revision", "created"):
            value = str(value)  # YAML reads a revision like 1234567 as a number
        types, meaning = _SHAPE[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise OfflineRLError(f"{where}: {key} must be {meaning}, got {value!r}")
        values[key] = value
    seeds = values["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise OfflineRLError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    if not all(isinstance(p, str) for p in values.get("plugins", [])):
        raise OfflineRLError(f"{where}: plugins must be a list of paths, got {values['plugins']!r}")
    return RunSpec(**values)


def read_run_spec(run_dir: str | Path) -> RunSpec:
    """The RunSpec of a run folder, or one OfflineRLError line if run.yaml is missing, unreadable or misshapen."""
    path = Path(run_dir) / "run.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise OfflineRLError(f"{path} is missing or unreadable ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return parse_run_spec(data, str(path))
