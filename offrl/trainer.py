"""The training loop and the run folder: sample -> update -> log -> evaluate -> checkpoint; resume; results.

A run folder holds run.yaml (everything needed to rebuild the run: agent, dataset, seeds, resolved configs),
checkpoint.pt (models, optimisers, random-stream counters, step, evaluation history; written atomically),
eval.csv, tb/ (TensorBoard) and, when finished, result.json. `Trainer.resume(run_dir)` rebuilds the run from
run.yaml and continues from the checkpoint; because every random number comes from counter-based streams
saved in the checkpoint, the resumed run ends with the same parameters and scores as an uninterrupted one.
While a process trains in a run folder it holds the folder's .lock (offrl/lock.py): a second `--resume` of the
same folder stops with a one-line error instead of writing checkpoints and result rows beside the first.
SIGINT or SIGTERM (offrl/stop.py) ends the loop between two updates with a checkpoint of that step and
RunInterrupted, which the CLI turns into exit status 128 + the signal's number.

Metrics stay on the device and are read every `log_every` steps (and before every evaluation and
checkpoint); a NaN or infinite loss stops the run with DivergedError before anything is written as a score.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

import offrl
from offrl import config as cfg
from offrl import registry
from offrl.atomic import atomic_path, write_text_atomic
from offrl.cache import Cache, dataset_fingerprint
from offrl.compile import UpdateRunner
from offrl.data import resolve
from offrl.errors import DivergedError, OfflineRLError, RunInterrupted
from offrl.evaluation import Evaluator
from offrl.lock import FileLock, Locked
from offrl.machine import hardware, pick_device, set_threads
from offrl.replay import TransitionBuffer
from offrl.stop import StopSignals


@dataclass
class TrainConfig:
    steps: cfg.PositiveInt = 1_000_000  # gradient updates per seed (the papers' budget)
    eval_every: cfg.PositiveInt = 5_000  # updates between evaluations (and one at the end)
    eval_episodes: cfg.PositiveInt = 10  # episodes per seed and evaluation, on fixed env seeds
    eval_seed: cfg.Seed = 10_000  # env seed of evaluation episode k is eval_seed + k
    log_every: cfg.PositiveInt = 1_000  # updates between metric reads (TensorBoard, progress bar, NaN check)
    checkpoint_every: cfg.PositiveInt = 50_000  # updates between atomic checkpoints (and one at the end)


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(offrl.__file__).parent,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return offrl.__version__


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


class Trainer:
    def __init__(self, run_dir: Path, spec: dict, log=print):
        """`spec` is the content of run.yaml. Use Trainer.start() or Trainer.resume()."""
        self.run_dir, self.spec, self.log = Path(run_dir), spec, log
        for plugin in spec.get("plugins", []):
            registry.load_plugin(plugin)
        self.info = registry.get(spec["agent"])
        self.train_cfg = TrainConfig(**spec["train"])
        self.agent_cfg = cfg.apply(self.info.config_cls(), spec["agent_config"])
        self.seeds = list(spec["seeds"])
        self.device = pick_device(spec.get("device", "auto"))
        self.threads = set_threads(spec.get("threads", 0), len(self.seeds))
        self.clock = PhaseClock()
        with self.clock("setup"):
            self.dataset = resolve(spec["dataset"], size=spec.get("dataset_size"), log=log)
            # Checked on resume: a run may continue on another machine, from a dataset rebuilt there.
            self.dataset_fingerprint = dataset_fingerprint(self.dataset)
            if not self.dataset.has_reference_scores:  # fail now, not after hours of training
                raise OfflineRLError(f"dataset {self.dataset.name} has no reference scores (ref_min_score/"
                                     "ref_max_score), so no normalised score can be reported; add them to its "
                                     "metadata")
            self.agent = registry.make(spec["agent"], self.dataset.spec, self.agent_cfg, self.seeds, self.device)
            self.agent.to(self.device)
            self.agent.total_steps = self.train_cfg.steps
            self.agent.prepare(self.dataset, cache=Cache(log=log))
            self.buffer = TransitionBuffer(self.dataset, self.seeds, self.agent_cfg.batch_size, self.device,
                                           extras=self.dataset.extras_for(self.agent.extras, self.agent_cfg))
            self.train_step = UpdateRunner(self.agent, self.buffer, spec.get("compile", "auto"), self.device,
                                           log=log)
        log(f"device {self.device} ({hardware(self.device)}), torch {torch.__version__}, update mode "
            f"{self.train_step.mode}" + (" (--compile auto)" if self.train_step.requested == "auto" else ""))
        self.step = 0
        self.history: list[dict] = []  # one record per evaluation
        self.wall_clock = 0.0
        # Code revisions the run trained under, in order: a run resumed after the code changed reports both ends.
        self.code_revisions = [spec.get("git_revision", "")]
        self.lock: FileLock | None = None  # the run folder's, held from start()/resume() to the end of fit()

    # ---- creating and resuming runs -------------------------------------------------------------
    @classmethod
    def start(cls, agent: str, dataset: str, seeds, out_dir="runs", train: TrainConfig | None = None,
              config_file: str | None = None, overrides: dict | None = None, device: str = "auto",
              dataset_size: int | None = None, results: str | None = None, plugins=(), run_name: str | None = None,
              threads: int = 0, compile: str = "auto", log=print) -> "Trainer":
        seeds = [int(s) for s in seeds]
        if len(set(seeds)) != len(seeds) or not seeds:
            raise OfflineRLError(f"--seeds must be distinct integers, got {seeds}")
        for plugin in plugins:
            registry.load_plugin(plugin)
        info = registry.get(agent)
        family = resolve_family(dataset)
        agent_cfg = cfg.resolve_config(info, family, config_file, overrides)
        if agent_cfg.batch_size <= 0:  # every agent's config has one: the trainer's buffer samples it per seed
            raise OfflineRLError(f"config key batch_size must be positive, got {agent_cfg.batch_size}")
        train = train or TrainConfig()
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = run_name or f"{agent}_{dataset.replace(':', '_').replace('/', '_')}_{stamp}"
        run_dir = Path(out_dir) / name
        if (run_dir / "run.yaml").exists():
            raise OfflineRLError(f"run folder {run_dir} exists: resume it with --resume {run_dir}")
        spec = dict(agent=agent, dataset=dataset, dataset_size=dataset_size, seeds=seeds, device=device, threads=threads,
                    compile=compile,
                    train=dataclasses.asdict(train), agent_config=cfg.to_dict(agent_cfg),
                    results=str(Path(results)) if results else str(Path(out_dir) / "results.csv"),
                    plugins=[str(Path(p).resolve()) for p in plugins], offrl_version=offrl.__version__,
                    git_revision=git_revision(), created=dt.datetime.now().isoformat(timespec="seconds"))
        trainer = cls(run_dir, spec, log=log)  # builds everything before anything is written
        run_dir.mkdir(parents=True, exist_ok=True)
        trainer.lock = lock_run_folder(run_dir)
        if (run_dir / "run.yaml").exists():  # another process started the same name while this one built
            trainer.lock.release()
            raise OfflineRLError(f"run folder {run_dir} exists: resume it with --resume {run_dir}")
        write_text_atomic(run_dir / "run.yaml", yaml.safe_dump(spec, sort_keys=False))
        return trainer

    @classmethod
    def resume(cls, run_dir, log=print, threads: int | None = None,
               checkpoint_every: int | None = None) -> "Trainer":
        """`threads`: this session's CPU thread count instead of the run's (e.g. the run now has the machine to
        itself). The KD-tree and the random streams do not depend on it; float sums in torch's CPU kernels may
        round differently, so such a run is no longer bit-identical to an uninterrupted one.
        `checkpoint_every`: this session's checkpoint interval (a slow run on a machine that may be taken away);
        it changes nothing the run computes."""
        run_dir = Path(run_dir)
        try:
            spec = yaml.safe_load((run_dir / "run.yaml").read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise OfflineRLError(f"cannot resume {run_dir}: run.yaml missing or unreadable ({exc})") from None
        if threads is not None:
            spec = dict(spec, threads=threads)  # this session only: run.yaml keeps the run's setting
        if checkpoint_every is not None:
            spec = dict(spec, train=dict(spec["train"], checkpoint_every=checkpoint_every))  # likewise
        lock = lock_run_folder(run_dir)  # before the checks: a run finishing now writes result.json
        try:
            if (run_dir / "result.json").exists():
                raise OfflineRLError(f"run {run_dir} has already finished (result.json exists)")
            trainer = cls(run_dir, spec, log=log)
            trainer.load_checkpoint()
        except BaseException:
            lock.release()
            raise
        trainer.lock = lock
        return trainer

    # ---- checkpoints ----------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        state = {"step": self.step, "agent": self.agent.checkpoint_state(), "buffer": self.buffer.state_dict(),
                 "history": self.history, "wall_clock": self.wall_clock, "phases": dict(self.clock.totals),
                 "torch_rng": torch.get_rng_state(), "code_revisions": self.code_revisions,
                 "dataset_fingerprint": self.dataset_fingerprint}
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self) -> None:
        if not self.checkpoint_path.exists():
            self.log(f"no checkpoint in {self.run_dir}: starting from step 0")
            return
        try:
            state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        except Exception as exc:
            raise OfflineRLError(f"checkpoint {self.checkpoint_path} is corrupt: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        started_on = state.get("dataset_fingerprint") if isinstance(state, dict) else None  # absent in checkpoints written before it was kept
        if started_on is not None and started_on != self.dataset_fingerprint:
            raise OfflineRLError(f"{self.run_dir} was trained on other data than {self.dataset.name} holds now "
                                 f"(fingerprint {started_on[:12]}, now {self.dataset_fingerprint[:12]}); "
                                 "restore the dataset it started on or start a new run")
        try:
            self.agent.load_checkpoint_state(state["agent"])
            self.buffer.load_state_dict(state["buffer"])
        except Exception as exc:
            raise OfflineRLError(f"checkpoint {self.checkpoint_path} is corrupt or does not match the run: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        self.step, self.history = state["step"], state["history"]
        self.wall_clock = state["wall_clock"]
        self.clock = PhaseClock(state.get("phases"))
        torch.set_rng_state(state["torch_rng"])
        self.code_revisions = list(state.get("code_revisions", self.code_revisions))
        now = git_revision()
        if now != self.code_revisions[-1]:
            self.log(f"the code is now at {now}; the run started at {self.code_revisions[0]} (both are recorded)")
            self.code_revisions.append(now)
        self.log(f"resumed {self.run_dir} at step {self.step:,}")

    # ---- the loop -------------------------------------------------------------------------------
    def check_finite(self, metrics: dict) -> dict[str, np.ndarray]:
        values = {k: v.detach().float().reshape(-1).cpu().numpy() for k, v in metrics.items()}
        for key, val in values.items():
            bad = ~np.isfinite(val)
            if bad.any():
                seeds = [self.seeds[i] for i in np.flatnonzero(bad)] if len(val) == len(self.seeds) else "all"
                kind = "NaN" if np.isnan(val).any() else "infinite"
                raise DivergedError(f"{key} became {kind} at step {self.step:,} (seeds {seeds}): the run diverged; "
                                    f"no score written. Last good checkpoint: {self.checkpoint_path}")
        return values

    def evaluate(self, evaluator: Evaluator) -> dict:
        returns = evaluator.run(self.agent)  # [S, N]
        mean_returns = returns.mean(1)
        scores = self.dataset.normalized_score(mean_returns)
        record = {"step": self.step, "returns": mean_returns.tolist(), "scores": np.asarray(scores).tolist()}
        self.history.append(record)
        lines = ["step,seed,mean_return,normalized_score"]
        for rec in self.history:
            for seed, ret, sc in zip(self.seeds, rec["returns"], rec["scores"]):
                lines.append(f"{rec['step']},{seed},{ret:.6g},{sc:.6g}")
        write_text_atomic(self.run_dir / "eval.csv", "\n".join(lines) + "\n")
        return record

    def fit(self, stop_at: int | None = None) -> list[dict] | None:
        """Train to `train.steps`. `stop_at` stops early (as a kill would) and returns None; else result rows.
        The run folder stays locked until the rows and result.json are written."""
        if self.lock is not None:
            lock_run_folder(self.run_dir, self.lock)  # again, if an earlier fit() released it; a no-op while held
        try:
            return self._fit(stop_at)
        finally:
            if self.lock is not None:
                self.lock.release()

    def _fit(self, stop_at: int | None) -> list[dict] | None:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        tc = self.train_cfg
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step or None)
        evaluator = Evaluator(self.dataset, len(self.seeds), tc.eval_episodes, tc.eval_seed, self.device)
        bar = tqdm(total=tc.steps, initial=self.step, desc=f"{self.spec['agent']} {self.spec['dataset']}",
                   unit="upd", dynamic_ncols=True, mininterval=1.0, disable=None)
        session_start, train_time_start = time.perf_counter(), self.clock.totals["train"]
        steps_start = self.step
        metrics: dict = {}
        saved_at = self.step  # the step of the newest checkpoint (or of the start)

        def checkpoint():
            nonlocal session_start, saved_at
            with self.clock("checkpoint"):
                self.wall_clock += time.perf_counter() - session_start
                session_start = time.perf_counter()
                self.save_checkpoint()
                saved_at = self.step

        self.agent.train()
        try:
            with StopSignals() as stop:
                while self.step < tc.steps:
                    if stop_at is not None and self.step >= stop_at:
                        return None
                    if stop.requested:  # SIGINT/SIGTERM arrived during the last step: keep it, then end
                        if saved_at != self.step:
                            checkpoint()
                        raise RunInterrupted(f"{stop.name}: stopped at step {self.step:,} and saved a checkpoint of "
                                             f"it; continue with: offrl run --resume {self.run_dir}", stop.signum)
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
                        checkpoint()
        finally:
            bar.close()
            writer.close()
            evaluator.close()
        self.wall_clock += time.perf_counter() - session_start
        train_time = self.clock.totals["train"] - train_time_start
        ups = (self.step - steps_start) / train_time if train_time > 0 else float("nan")
        return self.finish(ups)

    def finish(self, updates_per_s: float) -> list[dict]:
        from offrl import results

        final, best = self.history[-1], None
        rows = []
        for i, seed in enumerate(self.seeds):
            best_i = max(range(len(self.history)), key=lambda k: self.history[k]["scores"][i])
            best = self.history[best_i]
            rows.append(dict(
                date=dt.datetime.now().isoformat(timespec="seconds"), agent=self.spec["agent"],
                agent_version=code_range(self.code_revisions), dataset=self.dataset.name,
                dataset_source=self.dataset.source, dataset_version=self.dataset.version, seed=seed,
                steps=self.step, eval_every=self.train_cfg.eval_every, eval_episodes=self.train_cfg.eval_episodes,
                final_score=final["scores"][i], best_score=best["scores"][i], final_return=final["returns"][i],
                best_return=best["returns"][i], ref_min_score=self.dataset.ref_min_score,
                ref_max_score=self.dataset.ref_max_score, config_hash=cfg.config_hash(self.agent_cfg),
                device=str(self.device), hardware=hardware(self.device), torch_version=torch.__version__,
                wall_clock_s=round(self.wall_clock, 1), updates_per_s=round(updates_per_s, 2),
                run_dir=str(self.run_dir)))
        results.append_rows(self.spec["results"], rows)
        write_text_atomic(self.run_dir / "result.json", json.dumps(rows, indent=2))
        scores = np.array([r["final_score"] for r in rows])
        self.log(f"{self.spec['agent']} on {self.dataset.name}: normalised score {scores.mean():.1f} ± "
                 f"{scores.std():.1f} over seeds {self.seeds} after {self.step:,} updates "
                 f"(best {np.mean([r['best_score'] for r in rows]):.1f}); {updates_per_s:.0f} updates/s "
                 f"({updates_per_s * len(self.seeds):.0f} seed-updates/s, {self.train_step.mode}); wall-clock "
                 f"{self.wall_clock:.0f}s")
        self.log(f"time: {self.clock.shares()}; rows appended to {self.spec['results']}")
        return rows


def lock_run_folder(run_dir: Path, lock: FileLock | None = None) -> FileLock:
    """The run folder's lock (`lock`, or a new one) acquired, or a one-line error if another process holds it."""
    try:
        return (lock or FileLock(Path(run_dir) / ".lock")).acquire()
    except Locked as holder:
        raise OfflineRLError(f"run folder {run_dir} is in use by {holder}: wait for it to finish or stop it "
                             "first") from None


def resolve_family(dataset: str) -> str:
    """The environment family of a dataset name, for per-family agent defaults (hopper, halfcheetah, ...)."""
    name = dataset.split(":", 1)[-1]
    if "/" in name:  # minari ids: namespace/family/level-vN
        parts = name.split("/")
        return parts[1] if len(parts) > 2 else parts[0]
    return name.split("-", 1)[0]
