"""Sweeps: many `offrl run` jobs (agents x datasets x seed groups) spread over Ray, on this machine or a cluster.

A sweep file (YAML, see SweepSpec) expands into jobs. Each job is one `offrl run` subprocess of the installed
`offrl` entry point, exactly what a user would type, in its own run folder SWEEP/JOB, and appends its rows to
the sweep's one results table SWEEP/results.csv (results.append_rows' lock keeps concurrent appends whole).
A job's state is read from its folder just before it starts: result.json = finished (skipped), run.yaml
without it = stopped (continued with `offrl run --resume`), neither = new. Running a sweep again after a
kill therefore finishes it without repeating finished work.

Ray is the optional extra `offrl[sweep]`, imported only to run jobs (a dry run needs none). Every job is a Ray
task that asks for its CPUs and GPU fraction, so Ray packs jobs onto the machine (`ray.init(num_cpus=...)`) or
onto a cluster's nodes (`--address`). SIGTERM or Ctrl-C stops a sweep gracefully: it cancels its tasks, each
task sends SIGTERM to its run, and the run checkpoints the step it reached. A run never outlives its task
unasked: Ray ends a dead worker's children, and on Linux the run also gets SIGTERM when its parent dies.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from offrl.errors import OfflineRLError, RunInterrupted
from offrl.lock import held_by

RESULTS = "results.csv"
LOGS = "logs"
LOCK_WAIT_S = 120  # a run of a stopped sweep may still be writing its last checkpoint when the sweep restarts


@dataclass
class SweepSpec:
    """The sweep file's keys. Every job trains one seed group of one agent on one dataset."""
    name: str                                   # the sweep folder's name, under --out
    agents: list[str]
    datasets: list[str]
    seed_groups: list[list[int]]                # each group trains together in one process ("0,1" or "0-2")
    steps: int | None = None                    # offrl run's --steps, --eval-every, ... (None: its default)
    eval_every: int | None = None
    eval_episodes: int | None = None
    log_every: int | None = None
    checkpoint_every: int | None = None
    dataset_size: int | None = None             # transitions of a generated dataset
    device: str = "auto"
    compile: str | None = None                  # offrl run's --compile
    set: dict = field(default_factory=dict)     # --set overrides of every job
    agent_set: dict = field(default_factory=dict)  # agent -> its own --set overrides (after `set`)
    cpus: int = 1                               # resources of one job: CPUs (also its torch threads) ...
    gpus: float = 0.0                           # ... and GPU fraction (0.5: two jobs share a GPU)


@dataclass
class Job:
    name: str
    agent: str
    dataset: str
    seeds: list[int]
    overrides: dict


def _seed_group(value) -> list[int]:
    """A seed group as `offrl run --seeds` takes it: 3, [0, 1], "0,1" or "0-2"."""
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            seeds = [value]
        elif isinstance(value, list):
            seeds = [int(v) for v in value]
        elif re.fullmatch(r"\s*\d+\s*-\s*\d+\s*", str(value)):
            lo, hi = map(int, str(value).split("-"))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(v) for v in str(value).split(",") if v.strip()]
    except (TypeError, ValueError):
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise OfflineRLError(f"sweep seed group {value!r}: give distinct seeds, e.g. \"0,1\" or \"0-2\"")
    return seeds


def load_spec(path: str | os.PathLike, name: str | None = None) -> SweepSpec:
    """The sweep file at `path` checked: known keys, the lists it needs, positive budgets, resources."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise OfflineRLError(f"cannot read sweep file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise OfflineRLError(f"sweep file {path} must hold a mapping (agents:, datasets:, seed_groups:, ...)")
    raw = dict(raw)
    resources = raw.pop("resources", {}) or {}
    if not isinstance(resources, dict) or set(resources) - {"cpus", "gpus"}:
        raise OfflineRLError(f"sweep file {path}: resources takes cpus and gpus, got {resources!r}")
    raw.update(resources)
    keys = [f.name for f in dataclasses.fields(SweepSpec)]
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise OfflineRLError(f"sweep file {path}: unknown key(s) {', '.join(unknown)}; valid keys: "
                             f"{', '.join(k for k in keys if k not in ('cpus', 'gpus'))}, resources (cpus, gpus)")
    raw["name"] = name or raw.get("name") or path.stem
    for key in ("agents", "datasets", "seed_groups"):
        value = raw.get(key)
        if isinstance(value, (str, int)):
            value = [value]
        if not value or not isinstance(value, list):
            raise OfflineRLError(f"sweep file {path}: {key} must list at least one entry")
        raw[key] = value
    raw["agents"], raw["datasets"] = [str(a) for a in raw["agents"]], [str(d) for d in raw["datasets"]]
    raw["seed_groups"] = [_seed_group(g) for g in raw["seed_groups"]]
    spec = SweepSpec(**raw)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec.name):
        raise OfflineRLError(f"sweep name {spec.name!r}: use letters, digits, '.', '_' and '-'")
    for key in ("steps", "eval_every", "eval_episodes", "log_every", "checkpoint_every", "dataset_size"):
        value = getattr(spec, key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise OfflineRLError(f"sweep file {path}: {key} must be a positive integer, got {value!r}")
    if not isinstance(spec.cpus, int) or isinstance(spec.cpus, bool) or spec.cpus < 1:
        raise OfflineRLError(f"sweep file {path}: resources.cpus must be a whole number of CPUs >= 1, got {spec.cpus!r}")
    if not isinstance(spec.gpus, (int, float)) or isinstance(spec.gpus, bool) or spec.gpus < 0 \
            or spec.gpus > 1 and spec.gpus != int(spec.gpus):
        raise OfflineRLError(f"sweep file {path}: resources.gpus must be a fraction of one GPU (0.25, 0.5) or a "
                             f"whole number, got {spec.gpus!r}")
    if not isinstance(spec.set, dict) or not isinstance(spec.agent_set, dict) \
            or not all(isinstance(v, dict) for v in spec.agent_set.values()):
        raise OfflineRLError(f"sweep file {path}: set is a mapping key: value, agent_set maps an agent to one")
    stray = sorted(set(spec.agent_set) - set(spec.agents))
    if stray:
        raise OfflineRLError(f"sweep file {path}: agent_set names agent(s) the sweep does not run: {', '.join(stray)}")
    return spec


def jobs(spec: SweepSpec) -> list[Job]:
    """One job per (agent, dataset, seed group), named AGENT_DATASET_sSEEDS (its run folder's name)."""
    found = []
    for agent in spec.agents:
        for dataset in spec.datasets:
            for seeds in spec.seed_groups:
                name = f"{agent}_{re.sub(r'[^A-Za-z0-9.-]', '-', dataset)}_s{'_'.join(map(str, seeds))}"
                found.append(Job(name, agent, dataset, seeds, {**spec.set, **spec.agent_set.get(agent, {})}))
    names = [j.name for j in found]
    if len(set(names)) != len(names):
        raise OfflineRLError("two jobs of the sweep would share a run folder (a seed group or a dataset listed "
                             "twice)")
    return found


def job_state(folder: Path) -> str:
    """finished, running (a process holds the run folder), stopped (resumable) or new."""
    if (folder / "result.json").exists():
        return "finished"
    if held_by(folder / ".lock") is not None:
        return "running"
    return "stopped" if (folder / "run.yaml").exists() else "new"


def run_arguments(spec: SweepSpec, job: Job, sweep_dir: Path) -> list[str]:
    """The `offrl` arguments of a job: a new run, or the resume of its stopped one."""
    folder = sweep_dir / job.name
    threads = ["--threads", str(spec.cpus)]
    if (folder / "run.yaml").exists():
        return ["run", "--resume", str(folder), *threads]
    args = ["run", "--agent", job.agent, "--env", job.dataset, "--seeds", ",".join(map(str, job.seeds)),
            "--out", str(sweep_dir), "--name", job.name, "--results", str(sweep_dir / RESULTS),
            "--device", spec.device, *threads]
    for key in ("steps", "eval_every", "eval_episodes", "log_every", "checkpoint_every", "dataset_size"):
        if getattr(spec, key) is not None:
            args += [f"--{key.replace('_', '-')}", str(getattr(spec, key))]
    if spec.compile:
        args += ["--compile", spec.compile]
    for key, value in job.overrides.items():
        args += ["--set", f"{key}={json.dumps(value, separators=(',', ':'))}"]  # JSON is YAML: --set reads it back as the same value
    return args


# ------------------------------------------------------------------------------ one job, on a Ray worker

def _die_with_parent(parent: int):
    """preexec_fn: on Linux, SIGTERM this child when the process that started it dies (else nothing)."""
    def arm():
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before the line above
            os.kill(os.getpid(), signal.SIGTERM)
    return arm


def _error_line(log_path: Path, start: int) -> str:
    """The line that says why an attempt failed: its last 'error:' line, else its last line."""
    try:
        with open(log_path, "rb") as f:
            f.seek(start)
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1]


def run_job(spec: SweepSpec, job: Job, sweep_dir: str, offrl_exe: str, env: dict) -> dict:
    """Runs one job to its end in a subprocess; returns {name, state, rc, error, log}. Runs on a Ray worker."""
    sweep_dir = Path(sweep_dir)
    folder, log_path = sweep_dir / job.name, sweep_dir / LOGS / f"{job.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    waited = 0.0
    while (holder := held_by(folder / ".lock")) is not None:
        if waited >= LOCK_WAIT_S:
            return dict(name=job.name, state="failed", rc=None, log=str(log_path),
                        error=f"run folder {folder} is in use by {holder}")
        time.sleep(1.0)
        waited += 1.0
    if (folder / "result.json").exists():
        return dict(name=job.name, state="finished", rc=0, error="", log=str(log_path), skipped=True)
    exe = offrl_exe if Path(offrl_exe).is_file() else shutil.which("offrl")
    if exe is None:
        return dict(name=job.name, state="failed", rc=None, log=str(log_path),
                    error="no `offrl` command on this node: install offrl there")
    args = run_arguments(spec, job, sweep_dir)
    with open(log_path, "ab") as log:
        start = log.tell()
        log.write(f"$ offrl {' '.join(args)}\n".encode())
        log.flush()
        use_prctl = sys.platform.startswith("linux")
        process = subprocess.Popen([exe, *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},  # a log shows its progress now
                                   preexec_fn=_die_with_parent(os.getpid()) if use_prctl else None)
        try:
            rc = None
            while rc is None:  # short waits: ray.cancel's KeyboardInterrupt arrives only between them
                try:
                    rc = process.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
        except KeyboardInterrupt:  # ray.cancel: the sweep is stopping. SIGTERM makes the run save the step it
            process.send_signal(signal.SIGTERM)  # reached (Ray would SIGKILL it with its worker: work lost)
            rc = process.wait()
    finished = rc == 0 and (folder / "result.json").exists()
    state = "finished" if finished else "stopped" if rc in (128 + signal.SIGTERM, 128 + signal.SIGINT) else "failed"
    return dict(name=job.name, state=state, rc=rc, error="" if finished else _error_line(log_path, start),
                log=str(log_path))


# ------------------------------------------------------------------------------------- the driver

class _StopRequest:
    """Remembers a SIGTERM/SIGINT for the driver's loop to act on: raising inside the handler would land in
    the middle of Ray's own calls."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, _frame):
        self.signum = signum


def _offrl_executable() -> str:
    beside = Path(sys.executable).parent / "offrl"  # the environment this offrl runs in
    return str(beside if beside.is_file() else shutil.which("offrl") or beside)


def _forwarded_environment() -> dict:
    """Variables a job needs to see what the sweep's user sees: offrl's own (data folder, results root)."""
    return {k: v for k, v in os.environ.items() if k.startswith("OFFRL_") or k == "OMP_WAIT_POLICY"}


def run(spec: SweepSpec, sweep_dir: str | os.PathLike, address: str | None = None, cpus: int | None = None,
        log=print, status_every: float = 30.0) -> dict[str, list[str]]:
    """Runs the sweep's unfinished jobs on Ray and returns {state: [job names]} (finished, stopped, failed).

    Finished jobs are skipped; a failed job's error line is logged and the others go on. SIGTERM or SIGINT
    stops the sweep: Ray is shut down, which stops every job (each checkpoints), and the next run resumes them.
    """
    try:
        import ray
    except ImportError:
        raise OfflineRLError("offrl sweep runs jobs on Ray: pip install 'offrl[sweep]' (or use --dry-run)") from None
    sweep_dir = Path(sweep_dir).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    todo, outcome = [], {"finished": [], "stopped": [], "failed": []}
    for job in jobs(spec):
        state = job_state(sweep_dir / job.name)
        if state == "finished":
            outcome["finished"].append(job.name)
            log(f"skip {job.name} (finished)")
        else:
            todo.append(job)
            log(f"{'resume' if state == 'stopped' else 'wait for' if state == 'running' else 'start'} {job.name}")
    total = len(todo) + len(outcome["finished"])
    if not todo:
        log(f"all {total} jobs of {spec.name} have finished; rows in {sweep_dir / RESULTS}")
        return outcome
    stop = _StopRequest()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if address:
            try:
                ray.init(address=address, log_to_driver=False)
            except ConnectionError as exc:
                raise OfflineRLError(f"cannot reach the Ray cluster at {address} ({exc}); is it started "
                                     f"(`ray start --head`), and does this machine have its token?") from None
        else:
            # "local": a Ray of the sweep's own, even where `ray start` left a cluster that ray.init would join
            try:
                ray.init(address="local", num_cpus=cpus or os.cpu_count(), include_dashboard=False,
                         log_to_driver=False)
            except Exception as exc:  # Ray's own start-up failures (ports, shared memory, a full /tmp)
                raise OfflineRLError(f"Ray did not start on this machine: {type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        for s in previous:  # again: ray.init installs its own handlers, which end the driver at once
            signal.signal(s, stop)
        available = ray.cluster_resources()
        if spec.cpus > available.get("CPU", 0) or spec.gpus > available.get("GPU", 0):
            raise OfflineRLError(f"a job asks for {spec.cpus} CPU(s) and {spec.gpus:g} GPU(s); the Ray cluster "
                                 f"has {available.get('CPU', 0):g} and {available.get('GPU', 0):g}")
        task = ray.remote(run_job).options(num_cpus=spec.cpus, num_gpus=spec.gpus, max_retries=0)
        exe, env = _offrl_executable(), _forwarded_environment()
        started_at = {job.name: _log_size(sweep_dir, job) for job in todo}  # a started job logs its command
        pending = {task.remote(spec, job, str(sweep_dir), exe, env): job for job in todo}
        log(f"sweep {spec.name}: {len(todo)} job(s) on Ray ({available.get('CPU', 0):g} CPUs, "
            f"{available.get('GPU', 0):g} GPUs), {spec.cpus} CPU(s) and {spec.gpus:g} GPU(s) each; logs in "
            f"{sweep_dir / LOGS}")
        last_status = time.monotonic()
        while pending:
            if stop.signum is not None:
                log(f"{signal.Signals(stop.signum).name}: stopping the running jobs (each saves a checkpoint)")
                for ref in pending:
                    ray.cancel(ref)
                deadline = time.monotonic() + LOCK_WAIT_S
                while time.monotonic() < deadline and any(
                        held_by(sweep_dir / job.name / ".lock") is not None for job in pending.values()):
                    time.sleep(0.5)
                raise RunInterrupted(f"{signal.Signals(stop.signum).name}: the sweep stopped its jobs (each saved a "
                                     f"checkpoint); run it again to resume them", stop.signum)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # the task itself died (its node went away, say)
                    result = dict(name=job.name, state="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0],
                                  log="")
                outcome[result["state"]].append(job.name)
                counts = _progress(outcome, pending, sweep_dir, total, started_at)
                if result["state"] == "finished":
                    log(f"{counts} finished {job.name}" + (" (by another process)" if result.get("skipped") else ""))
                else:
                    log(f"{counts} {result['state']} {job.name}: {result['error'] or 'no message'} "
                        f"(log: {result['log']})")
            if pending and time.monotonic() - last_status >= status_every:
                log(_progress(outcome, pending, sweep_dir, total, started_at))
                last_status = time.monotonic()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if ray.is_initialized():
            ray.shutdown()
    log(f"sweep {spec.name}: {len(outcome['finished'])} of {total} jobs finished, {len(outcome['failed'])} failed"
        + (f", {len(outcome['stopped'])} stopped" if outcome["stopped"] else "") + f"; rows in {sweep_dir / RESULTS}")
    return outcome


def _log_size(sweep_dir: Path, job: Job) -> int:
    try:
        return (sweep_dir / LOGS / f"{job.name}.log").stat().st_size
    except OSError:
        return 0


def _progress(outcome: dict, pending: dict, sweep_dir: Path, total: int, started_at: dict) -> str:
    running = sum(_log_size(sweep_dir, job) > started_at[job.name] for job in pending.values())
    return (f"[{len(outcome['finished'])}/{total} done, {running} running, {len(pending) - running} queued, "
            f"{len(outcome['failed'])} failed]")


def plan(spec: SweepSpec, sweep_dir: str | os.PathLike) -> list[tuple[Job, str, list[str]]]:
    """(job, state, the `offrl` arguments it would run) for every job: what --dry-run lists."""
    sweep_dir = Path(sweep_dir).resolve()
    return [(job, job_state(sweep_dir / job.name), run_arguments(spec, job, sweep_dir)) for job in jobs(spec)]
