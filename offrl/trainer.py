"""The training loop: sample -> update -> log -> evaluate -> checkpoint, then finish; start and resume.

`Trainer.start` resolves the dataset, builds the run (offrl/build.py) and writes run.yaml (offrl/run_spec.py)
into a new run folder (offrl/run_folder.py: lock, checkpoints, eval.csv, result). `Trainer.resume` rebuilds a
run from its folder and continues from the checkpoint; because every random number comes from counter-based
streams saved in the checkpoint, the resumed run ends with the same parameters and scores as an
uninterrupted one. SIGINT or SIGTERM (offrl/stop.py) ends the loop between two updates with a checkpoint of
that step and RunInterrupted, which the CLI turns into exit status 128 + the signal's number.

Finishing is a step of its own: it turns what the run recorded (evaluation history, train time, steps) into
result rows and records them once. A run whose training is complete but whose rows are not recorded (killed
after its last checkpoint, or its results table was unwritable) finishes on the next `--resume`.
What can be checked before training is checked before training: the results table, the data folder, disk.

Metrics stay on the device and are read every `log_every` steps (and before every evaluation and
checkpoint); a NaN or infinite loss stops the run with DivergedError, recorded in the folder, before anything
is written as a score.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from offrl import config as cfg
from offrl import registry
from offrl.build import agent_config, build_run, load_plugins
from offrl.cache import Cache, dataset_fingerprint
from offrl.data import resolve
from offrl.errors import DivergedError, OfflineRLError, RunInterrupted
from offrl.evaluation import Evaluator, Perturbation, TaskEvaluator
from offrl.machine import ThreadWatch, hardware, pick_device, set_threads
from offrl.online import OnlinePhase
from offrl.paths import data_root
from offrl.run_folder import RunFolder, check_results_table, plugins_to_import
from offrl.results import (RISK_LEVEL, SAFETY_FIELDS, conditional_value_at_risk, iqm, safety_summary,
                           value_at_risk)
from offrl.run_spec import RunSpec
from offrl.stop import StopSignals
from offrl.tasks import AGGREGATE
from offrl.version import __version__


@dataclass
class TrainConfig:
    steps: cfg.NonNegativeInt = 1_000_000  # gradient updates per seed (the papers' budget); 0: online only
    online_steps: cfg.NonNegativeInt = 0  # environment steps per seed environment after the offline phase
    # In the online phase the three intervals below count environment steps.
    eval_every: cfg.PositiveInt = 5_000  # updates between evaluations (and one at the end)
    eval_episodes: cfg.PositiveInt = 10  # episodes per seed and evaluation, on fixed env seeds
    eval_seed: cfg.Seed = 10_000  # env seed of evaluation episode k is eval_seed + k
    log_every: cfg.PositiveInt = 1_000  # updates between metric reads (TensorBoard, progress bar, NaN check)
    checkpoint_every: cfg.PositiveInt = 50_000  # updates between atomic checkpoints (and one at the end)
    # Robustness evaluation (offrl/evaluation.py Perturbation): every evaluation of the run is perturbed.
    eval_action_noise: cfg.NonNegativeFloat = 0.0  # σ of Gaussian action noise, fraction of the half-range
    eval_start_shift: cfg.NonNegativeFloat = 0.0  # starts moved out of the data's region (envs that define it)

    def perturbation(self) -> Perturbation:
        return Perturbation(action_noise=self.eval_action_noise, start_shift=self.eval_start_shift)


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def default_run_name(agent: str, dataset: str, out_dir: Path) -> str:
    """agent_dataset_time, with -2, -3, ... when a run of the same agent and dataset started in the same second."""
    base = f"{agent}_{dataset.replace(':', '_').replace('/', '_')}_{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while (out_dir / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def code_range(revisions: list[str]) -> str:
    """The revision a run trained under, or "FIRST..LAST" (git's range notation) if resumed under newer code."""
    return revisions[0] if revisions[-1] == revisions[0] else f"{revisions[0]}..{revisions[-1]}"


class PhaseClock:
    """Wall-clock per phase (setup, train, eval, checkpoint, log): printed as shares at the end of a run."""

    def __init__(self, totals=None):
        self.totals = defaultdict(float, totals or {})

    def __call__(self, phase: str):
        clock = self

        class _Timer:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                clock.totals[phase] += time.perf_counter() - self.t
        return _Timer()

    def shares(self) -> str:
        total = sum(self.totals.values()) or 1.0
        return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(self.totals.items(), key=lambda kv: -kv[1]))


class PhaseSession:
    """What one phase's loop holds while it runs (the offline updates, or the online environment steps): the
    TensorBoard writer, the evaluator, the progress bar, and the checkpoint and stop rules both loops share.
    `position` is the phase's counter (updates or environment steps)."""

    def __init__(self, trainer: "Trainer", total: int, position: int, desc: str, unit: str, tb_step: int):
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        tc = trainer.train_cfg
        self.trainer = trainer
        self.writer = SummaryWriter(str(trainer.run_dir / "tb"), purge_step=tb_step or None)
        if trainer.task_conditioned:  # zero-shot: every task of the dataset's task set
            self.evaluator = TaskEvaluator(trainer.dataset, len(trainer.seeds), tc.eval_episodes, tc.eval_seed,
                                           trainer.device, getattr(trainer.agent_cfg, "inference_samples", 10_000),
                                           perturbation=tc.perturbation())
        else:
            self.evaluator = Evaluator(trainer.dataset, len(trainer.seeds), tc.eval_episodes, tc.eval_seed,
                                       trainer.device, perturbation=tc.perturbation())
        self.bar = tqdm(total=total, initial=position, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0,
                        disable=None)
        self.started, self.saved_at = time.perf_counter(), position  # saved_at: the newest checkpoint's position

    def checkpoint(self, position: int) -> None:
        t = self.trainer
        with t.clock("checkpoint"):
            t.wall_clock += time.perf_counter() - self.started
            self.started = time.perf_counter()
            t.save_checkpoint()
            self.saved_at = position

    def stop_if_asked(self, stop: StopSignals, position: int, where: str) -> None:
        """SIGINT/SIGTERM arrived during the last step: keep that step in a checkpoint, then end the run."""
        if stop.requested:
            if self.saved_at != position:
                self.checkpoint(position)
            raise RunInterrupted(f"{stop.name}: stopped at {where} and saved a checkpoint of it; continue with: "
                                 f"offrl run --resume {self.trainer.run_dir}", stop.signum)

    def close(self) -> None:
        self.bar.close()
        self.writer.close()
        self.evaluator.close()


class Trainer:
    def __init__(self, folder: RunFolder, spec: RunSpec, log=print, dataset=None, agent_cfg=None,
                 clock: PhaseClock | None = None):
        """Use Trainer.start() or Trainer.resume(). `dataset` and `agent_cfg`: already resolved (by start())."""
        self.folder, self.run_dir, self.spec, self.log = folder, folder.path, spec, log
        self.info = registry.get(spec.agent)
        self.train_cfg = cfg.apply(TrainConfig(), spec.train)
        self.seeds = list(spec.seeds)
        self.device = pick_device(spec.device)
        self.threads = set_threads(spec.threads, len(self.seeds))
        self.thread_watch = ThreadWatch(spec.threads, self.threads)  # gives up a thread to a job that arrives
        self.clock = clock or PhaseClock()
        with self.clock("setup"):
            self.dataset = dataset or resolve(spec.dataset, size=spec.dataset_size, log=log)
            self.agent_cfg = agent_cfg or cfg.apply(self.info.config_cls(), spec.agent_config)
            # Checked on resume: a run may continue on another machine, from a dataset rebuilt there.
            self.dataset_fingerprint = dataset_fingerprint(self.dataset)
            self.task_conditioned = check_tasks(self.dataset, self.info)
            if not self.dataset.has_reference_scores and not self.task_conditioned:  # fail now, not in hours
                raise OfflineRLError(f"dataset {self.dataset.name} has no reference scores (ref_min_score/"
                                     "ref_max_score), so no normalised score can be reported; add them to its "
                                     "metadata")
            check_results_table(spec.results)
            self.train_cfg.perturbation().check(self.dataset.make_env())
            parts = build_run(spec.agent, self.dataset, self.agent_cfg, self.seeds, self.device, spec.compile,
                              total_steps=self.train_cfg.steps, cache=Cache(log=log), log=log)
            self.agent, self.buffer, self.train_step = parts.agent, parts.buffer, parts.train_step
            self.folder.check_room_for(3 * sum(t.numel() * t.element_size() for t in self.agent.state_dict().values()))
        log(f"device {self.device} ({hardware(self.device)}), torch {torch.__version__}, update mode "
            f"{self.train_step.mode}" + (" (--compile auto)" if self.train_step.requested == "auto" else ""))
        if self.train_cfg.online_steps and not self.info.online:
            raise OfflineRLError(f"agent {spec.agent} has no online phase: drop --online-steps (agents with one: "
                                 f"{', '.join(a.name for a in registry.all_agents() if a.online)})")
        if not self.info.offline and not self.train_cfg.online_steps:
            raise OfflineRLError(f"agent {spec.agent} trains online only: give it --online-steps")
        if self.info.offline and not self.train_cfg.steps:
            raise OfflineRLError(f"agent {spec.agent} needs offline updates: --steps must be positive")
        self.step = 0
        self.env_step = 0  # environment steps of the online phase (per seed environment)
        self.online_updates = 0  # updates of the online phase
        self.online: OnlinePhase | None = None  # built as the online phase begins
        self.history: list[dict] = []  # one record per evaluation
        self.wall_clock = 0.0
        # Code revisions the run trained under, in order: a run resumed after the code changed reports both ends.
        self.code_revisions = [spec.git_revision]
        self.holds_folder = False  # the folder is locked from start()/resume() to the end of fit()

    # ---- creating and resuming runs -------------------------------------------------------------
    @classmethod
    def start(cls, agent: str, dataset: str, seeds, out_dir="runs", train: TrainConfig | None = None,
              config_file: str | None = None, overrides: dict | None = None, device: str = "auto",
              dataset_size: int | None = None, results: str | None = None, plugins=(), run_name: str | None = None,
              threads: int = 0, compile: str = "auto", log=print) -> "Trainer":
        seeds = [int(s) for s in seeds]
        if len(set(seeds)) != len(seeds) or not seeds:
            raise OfflineRLError(f"--seeds must be distinct integers, got {seeds}")
        check_data_folder()
        load_plugins(plugins)
        # A variant family's name (cocoa) becomes the agent its key picks (cocoa-iql), which the run records.
        agent = registry.resolve_variant(agent, overrides, lambda: cfg.load_yaml(config_file) if config_file else {})
        info = registry.get(agent)
        # The config's keys and values are checked before the dataset is resolved (which may build it);
        # the family's defaults need the dataset.
        cfg.apply(cfg.apply(info.config_cls(), cfg.load_yaml(config_file) if config_file else {}),
                            overrides or {})
        train = train or TrainConfig()
        if not info.offline:  # trained from scratch in the environment: no offline updates
            train = dataclasses.replace(train, steps=0)
        name = run_name or default_run_name(agent, dataset, Path(out_dir))
        folder = RunFolder(Path(out_dir) / name)
        if folder.exists():
            raise OfflineRLError(f"run folder {folder.path} exists: resume it with --resume {folder.path}")
        clock = PhaseClock()
        with clock("setup"):
            data = resolve(dataset, size=dataset_size, log=log)
            agent_cfg = agent_config(agent, data, config_file, overrides)
        spec = RunSpec(agent=agent, dataset=dataset, dataset_size=dataset_size, seeds=seeds, device=device,
                       threads=threads, compile=compile, train=dataclasses.asdict(train),
                       agent_config=cfg.to_dict(agent_cfg),
                       results=str(Path(results)) if results else str(Path(out_dir) / "results.csv"),
                       plugins=[str(Path(p).resolve()) for p in plugins], offrl_version=__version__,
                       git_revision=git_revision(), created=dt.datetime.now().isoformat(timespec="seconds"))
        trainer = cls(folder, spec, log=log, dataset=data, agent_cfg=agent_cfg, clock=clock)  # before any write
        folder.path.mkdir(parents=True, exist_ok=True)
        folder.lock()
        if folder.exists():  # another process started the same name while this one built
            folder.unlock()
            raise OfflineRLError(f"run folder {folder.path} exists: resume it with --resume {folder.path}")
        folder.write_spec(spec)
        trainer.holds_folder = True
        return trainer

    @classmethod
    def resume(cls, run_dir, log=print, threads: int | None = None, checkpoint_every: int | None = None,
               plugins=(), trust_plugins: bool = False) -> "Trainer":
        """`threads`: this session's CPU thread count instead of the run's (e.g. the run now has the machine to
        itself). The KD-tree and the random streams do not depend on it; float sums in torch's CPU kernels may
        round differently, so such a run is no longer bit-identical to an uninterrupted one.
        `checkpoint_every`: this session's checkpoint interval (a slow run on a machine that may be taken away);
        it changes nothing the run computes. `plugins`, `trust_plugins`: which of the plugin files run.yaml
        names may be imported (a run folder is data: its plugins run only when the user allows them)."""
        folder = RunFolder(run_dir)
        spec = folder.read_spec()
        allowed = plugins_to_import(spec, folder.path, plugins, trust_plugins)
        check_data_folder()
        if threads is not None:
            spec = dataclasses.replace(spec, threads=threads)  # this session only: run.yaml keeps the run's
        if checkpoint_every is not None:
            spec = dataclasses.replace(spec, train=dict(spec.train, checkpoint_every=checkpoint_every))  # likewise
        folder.lock()  # before the checks: a run finishing now writes result.json
        try:
            if folder.finished():
                raise OfflineRLError(f"run {folder.path} has already finished (result.json exists)")
            load_plugins(allowed)
            trainer = cls(folder, spec, log=log)
            trainer.load_checkpoint()
        except BaseException:
            folder.unlock()
            raise
        trainer.holds_folder = True
        return trainer

    # ---- checkpoints ----------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.folder.checkpoint_path

    def save_checkpoint(self) -> None:
        self.folder.save_checkpoint({
            "step": self.step, "agent": self.agent.checkpoint_state(), "buffer": self.buffer.state_dict(),
            "history": self.history, "wall_clock": self.wall_clock, "phases": dict(self.clock.totals),
            "torch_rng": torch.get_rng_state(), "code_revisions": self.code_revisions,
            "dataset_fingerprint": self.dataset_fingerprint,
            **({"online": {"env_step": self.env_step, "updates": self.online_updates, **self.online.state_dict()}}
               if self.online is not None else {})})

    def load_checkpoint(self) -> None:
        state = self.folder.load_checkpoint(map_location=self.device)
        if state is None:
            self.log(f"no checkpoint in {self.run_dir}: starting from step 0")
            return
        started_on = state.get("dataset_fingerprint")  # absent in checkpoints written before it was kept
        if started_on is not None and started_on != self.dataset_fingerprint:
            raise OfflineRLError(f"{self.run_dir} was trained on other data than {self.dataset.name} holds now "
                                 f"(fingerprint {started_on[:12]}, now {self.dataset_fingerprint[:12]}); "
                                 "restore the dataset it started on or start a new run")
        try:
            if "online" in state:  # stopped in the online phase: its losses, buffer and counters
                self.begin_online()
                self.online.load_state_dict(state["online"])
                self.env_step, self.online_updates = int(state["online"]["env_step"]), int(state["online"]["updates"])
            self.agent.load_checkpoint_state(state["agent"])
            self.buffer.load_state_dict(state["buffer"])
        except Exception as exc:
            raise OfflineRLError(f"checkpoint {self.checkpoint_path} does not match the run: "
                                 f"{_first_lines_that_say(exc)}") from None
        self.step, self.history = int(state["step"]), list(state["history"])
        self.wall_clock = float(state["wall_clock"])
        self.clock = PhaseClock(state.get("phases"))
        torch.set_rng_state(state["torch_rng"])
        self.code_revisions = list(state.get("code_revisions", self.code_revisions))
        now = git_revision()
        if now != self.code_revisions[-1]:
            self.log(f"the code is now at {now}; the run started at {self.code_revisions[0]} (both are recorded)")
            self.code_revisions.append(now)
        self.log(f"resumed {self.run_dir} at step {self.step:,}" + (
            f", online step {self.env_step:,} (episodes in flight restart)" if self.online is not None else ""))

    def begin_online(self) -> None:
        """Switch to the online phase: the agent's online losses, and the envs, buffer and runner. The agent's
        modules, targets, temperature and optimiser states are kept exactly."""
        if self.online is None:
            self.agent.set_phase("online")
            self.online = OnlinePhase(self.agent, self.info.agent_cls, self.dataset, self.buffer, self.agent_cfg,
                                      self.seeds, self.device, self.train_cfg.online_steps, self.spec.compile,
                                      log=self.log)

    # ---- the loop -------------------------------------------------------------------------------
    def check_finite(self, metrics: dict) -> dict[str, np.ndarray]:
        values = {k: v.detach().float().reshape(-1).cpu().numpy() for k, v in metrics.items()}
        for key, val in values.items():
            bad = ~np.isfinite(val)
            if bad.any():
                seeds = [self.seeds[i] for i in np.flatnonzero(bad)] if len(val) == len(self.seeds) else "all"
                kind = "NaN" if np.isnan(val).any() else "infinite"
                last = (f"the last good checkpoint is {self.checkpoint_path}" if self.checkpoint_path.exists()
                        else "no checkpoint was written")
                raise DivergedError(f"{key} became {kind} at step {self.step:,} (seeds {seeds}): the run diverged; "
                                    f"no score written; {last}")
        return values

    def evaluate(self, evaluator: Evaluator) -> dict:
        if self.task_conditioned:
            return self.evaluate_tasks(evaluator)
        returns = evaluator.run(self.agent)  # [S, N]
        exact = evaluator.policy_metrics(self.agent)  # a tabular env's exact columns (else empty)
        # Where the policy's expected return is known exactly, it is the score, not the episodes' mean.
        mean_returns = np.asarray(exact.pop("expected_return")) if "expected_return" in exact else returns.mean(1)
        scores = self.dataset.normalized_score(mean_returns)
        # Plain floats: the checkpoint holds the history and is loaded as data only (no numpy scalars).
        record = {"step": self.step, "returns": [float(r) for r in mean_returns],
                  "scores": [float(s) for s in np.asarray(scores).reshape(-1)]}
        if self.train_cfg.online_steps:
            record["env_step"] = self.env_step
        record.update(self.risk_of(returns))
        record.update(exact)
        self.history.append(record)
        self.folder.write_evaluations(self.seeds, self.history)
        return record

    def evaluate_tasks(self, evaluator: TaskEvaluator) -> dict:
        """Every task's returns and scores per seed, and as `returns`/`scores` their IQM over tasks."""
        tasks = {}
        per_task = evaluator.run(self.agent)  # {task: [S, N]}
        for task in self.dataset.tasks:
            mean_returns = per_task[task.name].mean(1)
            tasks[task.name] = {"returns": [float(r) for r in mean_returns],
                                "scores": [float(x) for x in task.normalized_score(mean_returns)],
                                **self.risk_of(per_task[task.name], task.normalized_score)}
        record = {"step": self.step, "tasks": tasks,
                  "task_inference": str(getattr(self.agent_cfg, "task_inference", "reward"))}
        for key in ("returns", "scores"):
            record[key] = [iqm([t[key][i] for t in tasks.values()]) for i in range(len(self.seeds))]
        self.history.append(record)
        self.folder.write_evaluations(self.seeds, self.history)
        return record

    def risk_of(self, returns: np.ndarray, normalized_score=None) -> dict:
        """Per seed: VaR and CVaR at RISK_LEVEL of the episodes' returns, as normalised scores (the
        normalisation is increasing and affine, so it commutes with both). `normalized_score`: a task's, else
        the dataset's."""
        normalize = normalized_score or self.dataset.normalized_score

        def normalised(values):
            return [float(v) for v in np.asarray(normalize(np.asarray(values))).reshape(-1)]
        return {"var": normalised([value_at_risk(r, RISK_LEVEL) for r in returns]),
                "cvar": normalised([conditional_value_at_risk(r, RISK_LEVEL) for r in returns])}

    def fit(self, stop_at: int | None = None, stop_online_at: int | None = None) -> list[dict] | None:
        """Train to `train.steps`, then online to `train.online_steps`, then finish. `stop_at` (an update) and
        `stop_online_at` (an environment step) stop early (as a kill would) and return None; else the result
        rows. The run folder stays locked until the rows and result.json are written."""
        if self.holds_folder:
            self.folder.lock()  # again, if an earlier fit() released it; a no-op while held
        try:
            if self.step < self.train_cfg.steps:
                with self._divergence_recorded():
                    self._train(stop_at)
                if self.step < self.train_cfg.steps:
                    return None
            if self.env_step < self.train_cfg.online_steps:
                with self._divergence_recorded():
                    self._train_online(stop_online_at)
                if self.env_step < self.train_cfg.online_steps:
                    return None
            return self.finish()
        finally:
            if self.holds_folder:
                self.folder.unlock()

    @contextlib.contextmanager
    def _divergence_recorded(self):
        """A phase that diverges leaves its message in the run folder (`offrl runs` shows it), then stops."""
        try:
            yield
        except DivergedError as exc:
            self.folder.record_divergence(str(exc))
            raise

    def _train(self, stop_at: int | None) -> None:
        tc = self.train_cfg
        session = PhaseSession(self, tc.steps, self.step, f"{self.spec.agent} {self.spec.dataset}", "upd", self.step)
        writer, evaluator, bar = session.writer, session.evaluator, session.bar
        train_time_start, steps_start = self.clock.totals["train"], self.step
        metrics: dict = {}
        self.agent.train()
        try:
            with StopSignals() as stop:
                while self.step < tc.steps:
                    if stop_at is not None and self.step >= stop_at:
                        return
                    session.stop_if_asked(stop, self.step, f"step {self.step:,}")
                    self.thread_watch()
                    with self.clock("train"):
                        self.step += 1
                        metrics = self.train_step(self.step)
                    boundary = self.step == tc.steps
                    if self.step % tc.log_every == 0 or self.step % tc.eval_every == 0 or boundary \
                            or self.step % tc.checkpoint_every == 0:
                        with self.clock("log"):
                            values = self.check_finite(metrics)
                            for key, val in values.items():
                                for seed, v in zip(self.seeds, val):
                                    writer.add_scalar(f"train/{key}/seed{seed}", float(v), self.step)
                            bar.update(self.step - bar.n)
                    if self.step % tc.eval_every == 0 or boundary:
                        with self.clock("eval"):
                            rec = self.evaluate(evaluator)
                        for seed, sc in zip(self.seeds, rec["scores"]):
                            writer.add_scalar(f"eval/normalized_score/seed{seed}", sc, self.step)
                        bar.set_postfix(score=f"{np.mean(rec['scores']):.1f}")
                        if bar.disable:  # no terminal (a background job, a log file): one line per evaluation
                            done = self.clock.totals["train"] - train_time_start
                            rate = (self.step - steps_start) / done if done > 0 else float("nan")
                            self.log(f"step {self.step:,}/{tc.steps:,}: normalised score "
                                     f"{np.mean(rec['scores']):.1f} ± {np.std(rec['scores']):.1f}, "
                                     f"{rate:.1f} updates/s")
                    if self.step % tc.checkpoint_every == 0 or boundary:
                        session.checkpoint(self.step)
        finally:
            session.close()
        self.wall_clock += time.perf_counter() - session.started

    def online_points(self) -> dict[str, int]:
        """The environment steps at which the result row records the online phase's score."""
        n = self.train_cfg.online_steps
        return {f"online_score_{q}": max(1, n * q // 100) for q in (25, 50, 75)}

    def _train_online(self, stop_at: int | None) -> None:
        """The online phase: each environment step collects one transition per seed environment; after the
        warm-up each is followed by one update. Logging, evaluation and checkpoints count environment steps."""
        tc = self.train_cfg
        self.begin_online()
        online = self.online
        session = PhaseSession(self, tc.online_steps, self.env_step, f"{self.spec.agent} {self.spec.dataset} online",
                               "env step", self.step + self.env_step)
        writer, evaluator, bar = session.writer, session.evaluator, session.bar
        points = set(self.online_points().values())
        recent: dict[int, float] = {}  # seed index -> return of its last finished episode
        metrics: dict = {}
        self.agent.train()
        try:
            with StopSignals() as stop:
                while self.env_step < tc.online_steps:
                    if stop_at is not None and self.env_step >= stop_at:
                        return
                    session.stop_if_asked(stop, self.env_step, f"online step {self.env_step:,}")
                    with self.clock("env"):
                        finished = online.envs.step(self.agent, online.buffer)
                    self.env_step += 1
                    x = self.step + self.env_step  # TensorBoard's axis: offline updates, then env steps
                    for i, ret in finished:
                        writer.add_scalar(f"online/episode_return/seed{self.seeds[i]}", ret, x)
                        recent[i] = ret
                    if self.env_step > online.first_update:
                        with self.clock("train"):
                            self.online_updates += 1
                            metrics = online.runner(self.online_updates)
                    boundary = self.env_step == tc.online_steps
                    evaluate = self.env_step % tc.eval_every == 0 or self.env_step in points or boundary
                    if metrics and (self.env_step % tc.log_every == 0 or evaluate
                                    or self.env_step % tc.checkpoint_every == 0):
                        with self.clock("log"):
                            for key, val in self.check_finite(metrics).items():
                                for seed, v in zip(self.seeds, val):
                                    writer.add_scalar(f"train/{key}/seed{seed}", float(v), x)
                    if self.env_step % tc.log_every == 0 or boundary:
                        bar.update(self.env_step - bar.n)
                        if recent:
                            bar.set_postfix(episode_return=f"{np.mean(list(recent.values())):.1f}")
                    if evaluate:
                        with self.clock("eval"):
                            rec = self.evaluate(evaluator)
                        for seed, sc in zip(self.seeds, rec["scores"]):
                            writer.add_scalar(f"eval/normalized_score/seed{seed}", sc, x)
                        if bar.disable:
                            self.log(f"online step {self.env_step:,}/{tc.online_steps:,}: normalised score "
                                     f"{np.mean(rec['scores']):.1f} ± {np.std(rec['scores']):.1f}")
                    if self.env_step % tc.checkpoint_every == 0 or boundary:
                        session.checkpoint(self.env_step)
        finally:
            session.close()
        self.wall_clock += time.perf_counter() - session.started

    # ---- finishing ------------------------------------------------------------------------------
    def updates_per_s(self) -> float:
        """Updates per second over all the run's sessions: its updates (both phases) over its train time."""
        train_time = self.clock.totals["train"]
        return (self.step + self.online_updates) / train_time if train_time > 0 else 0.0

    def phase_scores(self, i: int) -> dict:
        """The online-phase columns of seed i's row (empty without an online phase)."""
        tc = self.train_cfg
        if not tc.online_steps:
            return {}
        offline = [rec for rec in self.history if rec.get("env_step", 0) == 0]
        at = {rec["env_step"]: rec["scores"][i] for rec in self.history if "env_step" in rec}
        return {"online_steps": tc.online_steps, "offline_score": offline[-1]["scores"][i] if offline else None,
                **{name: at.get(step) for name, step in self.online_points().items()}}

    def result_rows(self) -> list[dict]:
        """One row per seed from what the run recorded: the evaluation history, steps and times."""
        final = self.history[-1]
        rows = []
        for i, seed in enumerate(self.seeds):
            best = max(self.history, key=lambda rec: rec["scores"][i])
            rows.append(dict(
                date=dt.datetime.now().isoformat(timespec="seconds"), agent=self.spec.agent,
                agent_version=code_range(self.code_revisions), dataset=self.dataset.name,
                dataset_source=self.dataset.source, dataset_version=self.dataset.version, seed=seed, task="",
                steps=self.step, eval_every=self.train_cfg.eval_every, eval_episodes=self.train_cfg.eval_episodes,
                final_score=final["scores"][i], best_score=best["scores"][i], final_return=final["returns"][i],
                best_return=best["returns"][i], ref_min_score=self.dataset.ref_min_score,
                ref_max_score=self.dataset.ref_max_score, config_hash=cfg.config_hash(self.agent_cfg),
                device=str(self.device), hardware=hardware(self.device), torch_version=torch.__version__,
                wall_clock_s=round(self.wall_clock, 1), updates_per_s=round(self.updates_per_s(), 2),
                run_dir=str(self.run_dir), **self.phase_scores(i),
                # Risk of the last evaluation's episodes (absent from histories written before it was kept).
                final_var10=final["var"][i] if "var" in final else None,
                final_cvar10=final["cvar"][i] if "cvar" in final else None,
                eval_perturbation=self.train_cfg.perturbation().label(),
                **{name: final[name][i] for name in SAFETY_FIELDS if name in final}))
        return self.task_rows(rows) if self.task_conditioned else rows

    def task_rows(self, seed_rows: list[dict]) -> list[dict]:
        """Per seed: the aggregate row (task "all tasks": IQM over tasks of the scores and returns, the tasks'
        mean reference returns) and one row per task with that task's scores and reference returns."""
        tasks = list(self.dataset.tasks)
        rows = []
        for i, row in enumerate(seed_rows):
            # The aggregate's risk columns stay empty: an IQM over tasks has no episodes of its own.
            rows.append(dict(row, task=AGGREGATE, ref_min_score=float(np.mean([t.ref_min_score for t in tasks])),
                             ref_max_score=float(np.mean([t.ref_max_score for t in tasks])),
                             final_var10=None, final_cvar10=None))
            for task in tasks:
                final = self.history[-1]["tasks"][task.name]
                best = max((rec["tasks"][task.name] for rec in self.history), key=lambda t: t["scores"][i])
                rows.append(dict(row, task=task.name, final_score=final["scores"][i], best_score=best["scores"][i],
                                 final_return=final["returns"][i], best_return=best["returns"][i],
                                 ref_min_score=task.ref_min_score, ref_max_score=task.ref_max_score,
                                 final_var10=final["var"][i] if "var" in final else None,
                                 final_cvar10=final["cvar"][i] if "cvar" in final else None))
        return rows

    def finish(self) -> list[dict]:
        """Record the result of a run whose training is complete: rows not yet in the results table, then
        result.json. Safe to repeat (a kill between the two, an unwritable table fixed since)."""
        if self.step < self.train_cfg.steps or self.env_step < self.train_cfg.online_steps or not self.history:
            raise OfflineRLError(f"run {self.run_dir} is at step {self.step:,} of {self.train_cfg.steps:,}"
                                 + (f", online step {self.env_step:,} of {self.train_cfg.online_steps:,}"
                                    if self.train_cfg.online_steps else "")
                                 + f": resume it with offrl run --resume {self.run_dir}")
        rows = self.result_rows()
        try:
            appended = self.folder.record_result(rows, self.spec.results)
        except (OSError, ValueError) as exc:
            raise OfflineRLError(f"could not record the result of {self.run_dir} in {self.spec.results} "
                                 f"({type(exc).__name__}: {exc}); fix it and finish with offrl run --resume "
                                 f"{self.run_dir}") from None
        ups = self.updates_per_s()
        for task in (self.dataset.tasks if self.task_conditioned else ()):
            task_scores = np.array([r["final_score"] for r in rows if r["task"] == task.name])
            self.log(f"  task {task.name}: normalised score {task_scores.mean():.1f} ± {task_scores.std():.1f}")
        scores = np.array([r["final_score"] for r in rows if r["task"] in ("", AGGREGATE)])
        self.log(f"{self.spec.agent} on {self.dataset.name}{' (IQM over tasks)' if self.task_conditioned else ''}: "
                 f"normalised score {scores.mean():.1f} ± "
                 f"{scores.std():.1f} over seeds {self.seeds} after {self.step:,} updates "
                 + (f"and {self.env_step:,} online steps " if self.train_cfg.online_steps else "")
                 + f"(best {np.mean([r['best_score'] for r in rows if r['task'] in ('', AGGREGATE)]):.1f}); "
                 f"{ups:.0f} updates/s "
                 f"({ups * len(self.seeds):.0f} seed-updates/s, {self.train_step.mode}); wall-clock "
                 f"{self.wall_clock:.0f}s")
        if safety_summary(rows):
            self.log(f"safety (exact, mean over seeds): {safety_summary(rows)}")
        already = len(rows) - appended
        self.log(f"time: {self.clock.shares()}; rows appended to {self.spec.results}"
                 + (f" ({already} already there, not appended again)" if already else ""))
        return rows


def check_tasks(dataset, info) -> bool:
    """Whether the run is task-conditioned (evaluated per task); one line if agent and data do not fit."""
    agent_cls = info.agent_cls
    if dataset.reward_free and not agent_cls.reward_free:
        raise OfflineRLError(f"dataset {dataset.name} is reward-free: agent {info.name} reads rewards; use a "
                             "reward-free agent (fb, vcfb, mcfb)")
    if agent_cls.task_conditioned and dataset.tasks is None:
        raise OfflineRLError(f"agent {info.name} is evaluated per task, and dataset {dataset.name} has no task "
                             "set (use a reward-free dataset such as pointgoals-random)")
    return bool(agent_cls.task_conditioned)


def check_data_folder() -> None:
    """One line if the data folder ($OFFRL_DATA_DIR) exists but is not a folder."""
    root = data_root()
    if root.exists() and not root.is_dir():
        raise OfflineRLError(f"the data folder {root} ($OFFRL_DATA_DIR) is not a folder")


def _first_lines_that_say(exc: Exception) -> str:
    """An exception's first line, and the first line that gives sizes (load_state_dict lists them below)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    said = [lines[0]] if lines else []
    said += [line for line in lines[1:] if "size mismatch" in line][:1]
    return f"{type(exc).__name__}: {' '.join(said)}"
