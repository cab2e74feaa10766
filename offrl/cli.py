"""The `offrl` command: parse, call the library, print. Every OfflineRLError becomes one line and exit 2."""
from __future__ import annotations

import functools
import os
import sys

import click

from offrl.errors import OfflineRLError, RunInterrupted


def friendly(fn):
    """Turn library errors into one clear line on stderr and a non-zero exit."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RunInterrupted as exc:
            click.echo(str(exc), err=True)
            sys.exit(exc.exit_code)
        except OfflineRLError as exc:
            click.echo(f"error: {one_line(str(exc))}", err=True)
            sys.exit(2)
        except OSError as exc:  # the machine refused: a path that is a file, a read-only folder, a full disk
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: resume with --resume RUN_DIR (the last checkpoint is kept)", err=True)
            sys.exit(130)
    return wrapper


def one_line(text: str) -> str:
    """A message as one line: a parser's report (YAML's, say) may span several."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def echo_columns(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Print a header and rows of strings as left-aligned columns."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    try:
        if "-" in text and "," not in text:
            lo, hi = text.split("-")
            return list(range(int(lo), int(hi) + 1))
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise OfflineRLError(f"{option} takes a list like 0,1,2 or a range like 0-4, got {text!r}") from None


class OneLineErrors(click.Group):
    """click's own usage errors (a bad option value, an unknown option) as one line, like the library's."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def plain_name(ctx, param, value):
    """A run folder's name: one folder inside --out, never a path out of it."""
    if value is not None and (not value.strip() or "/" in value or "\\" in value or value in (".", "..")
                              or value.startswith(".")):
        raise click.BadParameter(f"{value!r} must be a plain folder name (no path separator, not empty, no "
                                 "leading dot)")
    return value


def seed_list(ctx, param, value):
    """Seeds to train: checked against the random streams' key range before any data is built."""
    from offrl.rng import check_seed

    try:
        for seed in parse_seeds(value, param.opts[0]):
            check_seed(seed)
    except OfflineRLError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def positive_counts(ctx, param, value):
    """A list like 1,4,16 of counts (bench's seed counts, rollout horizons), each at least 1."""
    try:
        counts = parse_seeds(value, param.opts[0])
    except OfflineRLError as exc:
        raise click.BadParameter(str(exc)) from None
    if not counts or any(n < 1 for n in counts):
        raise click.BadParameter(f"takes counts of at least 1, got {value!r}")
    return value


def existing_folder_or_none(ctx, param, value):
    """A folder option that may not exist yet, but must not be a file."""
    if value is not None and os.path.exists(value) and not os.path.isdir(value):
        raise click.BadParameter(f"{value} is a file, not a folder")
    return value


@click.group(cls=OneLineErrors)
@click.version_option(package_name="offrl")
def main():
    """offrl: offline-RL agents on D4RL, Minari and generated datasets, with a results table."""


# Shared by run and bench; the names are offrl.compile.MODES (not imported here: it would load torch).
compile_option = click.option("--compile", "compile_mode", type=click.Choice(["auto", "eager", "compile", "cudagraphs"]),
                              default="auto", show_default=True,
                              help="how a training step runs: auto = cudagraphs on CUDA, eager on CPU (offrl/compile.py)")


@main.command()
@click.option("--agent", help="registered agent name (see `offrl agents`)")
@click.option("--env", "dataset", help="dataset name, e.g. pointmass-medium, hopper-medium, minari:ID, d4rl:NAME")
@click.option("--seeds", default="0", show_default=True, callback=seed_list,
              help="seeds trained together in one process: 0,1,2 or 0-4")
@click.option("--steps", type=int, help="gradient updates per seed [default: 1,000,000, the papers']")
@click.option("--online-steps", type=int, help="then this many environment steps of online fine-tuning per seed "
              "environment (agents with an online phase; eval, log and checkpoint intervals then count env steps)")
@click.option("--eval-every", type=int, help="updates between evaluations [default: 5,000]")
@click.option("--eval-episodes", type=int, help="evaluation episodes per seed [default: 10; 100 for VaR/CVaR]")
@click.option("--eval-action-noise", type=float, help="robustness evaluation: Gaussian noise on every action, σ as a "
              "fraction of the action range's half-width [default: 0]")
@click.option("--eval-start-shift", type=float, help="robustness evaluation: starts moved out of the data's region "
              "by this much (envs that define it, e.g. pointmass) [default: 0]")
@click.option("--log-every", type=int, help="updates between metric reads [default: 1,000]")
@click.option("--checkpoint-every", type=int, help="updates between checkpoints [default: 50,000; with --resume, "
              "the run's own setting]")
@click.option("--config", "config_file", type=click.Path(), help="YAML file of agent config overrides")
@click.option("--set", "sets", multiple=True, help="agent config override key=value (repeatable)")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 or auto")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads [default: from the cores free at the start, docs/performance.md; "
              "with --resume, the run's own setting]")
@compile_option
@click.option("--dataset-size", type=int, help="transitions of a generated dataset (default: the recipe's)")
@click.option("--out", default="runs", show_default=True, type=click.Path(), help="folder of run folders")
@click.option("--results", type=click.Path(), help="results table CSV [default: OUT/results.csv]")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(), help="Python file registering an agent")
@click.option("--name", "run_name", callback=plain_name, help="run folder name [default: agent_dataset_time]")
@click.option("--resume", "resume_dir", type=click.Path(), help="continue the run in this folder (with --threads "
              "and --checkpoint-every for this session only; the run's other settings are its own); a run whose "
              "training is complete but whose result is not recorded finishes")
@click.option("--trust-plugins", is_flag=True, help="with --resume: import the plugin files the run folder's "
              "run.yaml names (they run with your rights; without this, pass each one again with --plugin)")
@click.pass_context
@friendly
def run(ctx, agent, dataset, seeds, steps, online_steps, eval_every, eval_episodes, eval_action_noise, eval_start_shift,
        log_every, checkpoint_every, config_file, sets, device, threads, compile_mode, dataset_size, out, results, plugins,
        run_name, resume_dir, trust_plugins):
    """Train an agent on a dataset and append one result row per seed."""
    from offrl import config as cfg
    from offrl import registry
    from offrl.trainer import TrainConfig, Trainer

    if resume_dir:
        fixed = [p.opts[0] for p in ctx.command.params
                 if p.name not in ("resume_dir", "threads", "checkpoint_every", "plugins", "trust_plugins")
                 and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
        if fixed:
            raise OfflineRLError(f"{', '.join(fixed)} cannot change a run: with --resume only --threads and "
                                 f"--checkpoint-every apply (the rest is in {resume_dir}/run.yaml)")
        if checkpoint_every is not None and checkpoint_every <= 0:
            raise OfflineRLError(f"--checkpoint-every must be positive, got {checkpoint_every}")
        trainer = Trainer.resume(resume_dir, threads=threads, checkpoint_every=checkpoint_every, plugins=plugins,
                                 trust_plugins=trust_plugins)
    else:
        if not agent or not dataset:
            raise OfflineRLError("offrl run needs --agent and --env (or --resume RUN_DIR)")
        if trust_plugins:
            raise OfflineRLError("--trust-plugins applies with --resume (a new run imports its --plugin files)")
        train = TrainConfig()
        given = dict(steps=steps, online_steps=online_steps, eval_every=eval_every, eval_episodes=eval_episodes, log_every=log_every,
                     checkpoint_every=checkpoint_every)
        for key, value in given.items():
            if value is not None:
                if value <= 0:
                    raise OfflineRLError(f"--{key.replace('_', '-')} must be positive, got {value}")
                setattr(train, key, value)
        if steps is not None and agent in [a.name for a in registry.all_agents() if not a.offline]:
            raise OfflineRLError(f"agent {agent} trains online only: give --online-steps, not --steps")
        for key, value in dict(eval_action_noise=eval_action_noise, eval_start_shift=eval_start_shift).items():
            if value is not None:
                if not value >= 0 or value == float("inf"):
                    raise OfflineRLError(f"--{key.replace('_', '-')} must be a finite number >= 0, got {value}")
                setattr(train, key, value)
        try:
            trainer = Trainer.start(agent, dataset, parse_seeds(seeds), out_dir=out, train=train,
                                    config_file=config_file, overrides=cfg.parse_set(sets), device=device,
                                    dataset_size=dataset_size, results=results, plugins=plugins,
                                    run_name=run_name, threads=threads or 0, compile=compile_mode)
        except KeyboardInterrupt:
            click.echo("interrupted before the run folder was written: nothing to resume", err=True)
            sys.exit(130)
        click.echo(f"run folder: {trainer.run_dir}")
    trainer.fit()


@main.command()
@click.argument("folder", type=click.Path(), default="runs")
@click.option("--finish", is_flag=True, help="record the result of every run in FOLDER (or of the run FOLDER) "
              "whose training is complete but whose result is not recorded")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(), help="with --finish: a plugin file a run "
              "names, allowed to be imported")
@click.option("--trust-plugins", is_flag=True, help="with --finish: import the plugin files the runs name")
@friendly
def runs(folder, finish, plugins, trust_plugins):
    """The run folders in FOLDER: progress, last evaluation, time left at the pace so far, and whether each
    finished, is training now, stopped (resume it with `offrl run --resume FOLDER/RUN`), trained all its steps
    without a recorded result (`offrl runs --finish`), or diverged."""
    from pathlib import Path

    from offrl.runs import list_runs, run_status

    found = [run_status(folder)] if (Path(folder) / "run.yaml").exists() else list_runs(folder)
    if not found:
        raise OfflineRLError(f"no run folders (folders with a run.yaml) in {folder}")
    if finish:
        from offrl.trainer import Trainer

        todo = [r for r in found if r.state == "trained"]
        if not todo:
            click.echo(f"no run in {folder} waits to be finished (all steps trained, no result recorded)")
        for r in todo:
            Trainer.resume(r.path, plugins=plugins, trust_plugins=trust_plugins).fit()
        found = [run_status(r.path) for r in found]
    rows = []
    for r in found:
        last = "-" if r.last_score is None else f"{r.last_score:.1f} at {r.last_eval_step:,}"
        state = f"running ({r.holder})" if r.state == "running" else r.state
        left = "-" if r.seconds_left is None else f"{r.seconds_left / 3600:.1f} h"
        rows.append((r.path.name, r.agent, r.dataset, ",".join(map(str, r.seeds)), f"{r.step:,}/{r.steps:,}", last,
                     left, state))
    echo_columns(("run", "agent", "dataset", "seeds", "step", "last score", "left", "state"), rows)


@main.command()
@click.option("--plugin", "plugins", multiple=True, type=click.Path(), help="Python file registering an agent")
@friendly
def agents(plugins):
    """List registered agents: name, paper, family, pre-training stages."""
    from offrl import registry

    for p in plugins:
        registry.load_plugin(p)
    rows = [(a.name, a.paper, a.family, ", ".join(a.stages) or "-") for a in registry.all_agents()]
    rows += [(v.name, v.paper, f"{v.family}; = {v.variants[v.default]} unless --set {v.key}=...",
              ", ".join(v.stages) or "-") for v in registry.all_variants()]
    rows.sort()
    echo_columns(("name", "paper", "family", "stages"), rows)


@main.command()
@click.argument("path", type=click.Path(), default="runs/results.csv")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "csv"]), default="text", show_default=True)
@friendly
def table(path, fmt):
    """Aggregate a results table: mean ± std, IQM and 95% bootstrap CI per (agent, dataset), final and best."""
    from offrl import results

    rows = results.read_rows(path)
    if not rows:
        raise OfflineRLError(f"results table {path} holds no rows")
    click.echo(results.format_table(results.aggregate(rows), fmt=fmt))


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="the picture: NAME.png or NAME.svg")
@click.option("--kind", type=click.Choice(["curves", "iqm", "profile", "poi"]),
              help="curves: learning curves from run folders' eval.csv; iqm: IQM with 95% CIs per agent; profile: "
                   "performance profiles; poi: probability of improvement [default: curves for run folders, iqm "
                   "for a results table or a board]")
@click.option("--score", type=click.Choice(["final", "best"]), default="final", show_default=True,
              help="which score of the rows the aggregate plots use")
@click.option("--agent", "agent_names", help="agents to include, comma-separated [default: all]")
@click.option("--env", "dataset_names", help="datasets to include, comma-separated [default: all]")
@click.option("--pair", "pairs", multiple=True, help="poi: compare agent X with Y, as X,Y (repeatable) [default: "
                                                      "every two agents that share a dataset]")
@click.option("--title", help="the figure's title [default: what it shows and how]")
@friendly
def plot(inputs, output, kind, score, agent_names, dataset_names, pairs, title):
    """Draw results: learning curves of run folders (or of every run folder in a folder, or of the run folders
    a results table names), or IQM, performance-profile and probability-of-improvement plots of a results
    table or a published board (results/NAME)."""
    from pathlib import Path

    from offrl import plots

    split = (lambda text: [t.strip() for t in text.split(",") if t.strip()] if text else None)
    tables = [p for p in inputs if Path(p).is_file() or (Path(p) / "runs.csv").is_file()]
    kind = kind or ("iqm" if tables else "curves")
    if Path(output).suffix.lower() not in plots.FORMATS:  # before any work
        raise OfflineRLError(f"plot output {output}: the name must end in {' or '.join(plots.FORMATS)}")
    if kind == "curves" and not tables:
        curves = [plots.read_run_curve(d) for d in plots.find_run_folders(inputs)]
        wanted_agents, wanted_datasets = split(agent_names), split(dataset_names)
        curves = [c for c in curves if (not wanted_agents or c.agent in wanted_agents)
                  and (not wanted_datasets or c.dataset in wanted_datasets)]
        fig = plots.curves_figure(curves, title=title)
    else:
        if len(tables) != len(inputs):
            others = ", ".join(p for p in inputs if p not in tables)
            raise OfflineRLError(f"--kind {kind} reads results tables or boards; not one: {others}")
        rows = plots.select_rows([r for t in tables for r in plots.read_table(t)], split(agent_names),
                                 split(dataset_names))
        if kind == "curves":
            curves, missing = plots.curves_of_rows(rows)
            if not curves:
                raise OfflineRLError(f"none of the rows' run folders (with eval.csv) is on this machine, e.g. "
                                     f"{rows[0]['run_dir']}: a results table keeps scores, not learning curves")
            if missing:
                click.echo("no run folder left for " + ", ".join(f"{a} on {d}" for a, d in missing), err=True)
            fig = plots.curves_figure(curves, title=title)
        elif kind == "iqm":
            fig = plots.iqm_figure(rows, score=score, title=title)
        elif kind == "profile":
            fig = plots.profile_figure(rows, score=score, title=title)
        else:
            parsed = []
            for pair in pairs:
                names = split(pair) or []
                if len(names) != 2:
                    raise OfflineRLError(f"--pair takes two agents as X,Y, got {pair!r}")
                parsed.append(tuple(names))
            fig = plots.poi_figure(rows, pairs=parsed or None, score=score, title=title)
    click.echo(f"wrote {plots.save(fig, output)}")


@main.command()
@click.argument("sweep_file", type=click.Path())
@click.option("--out", default="runs", show_default=True, type=click.Path(),
              help="the sweep folder is OUT/NAME: one run folder per job, results.csv, logs/")
@click.option("--name", help="the sweep's name [default: the file's name: key, else its file name]")
@click.option("--address", help="a Ray cluster to run on (e.g. HEAD_IP:6379 or auto) [default: a Ray started on "
                                "this machine]")
@click.option("--cpus", type=int, help="CPUs of the Ray started on this machine [default: all]")
@click.option("--dry-run", is_flag=True, help="list the jobs, their state and command; run nothing")
@friendly
def sweep(sweep_file, out, name, address, cpus, dry_run):
    """Run a sweep file's jobs (agents x datasets x seed groups, each an `offrl run`) on Ray. Finished jobs are
    skipped and stopped ones resumed, so after a kill the same command finishes the sweep."""
    import shlex
    from pathlib import Path

    from offrl import sweep as sw

    if cpus is not None and cpus < 1:
        raise OfflineRLError(f"--cpus must be at least 1, got {cpus}")
    spec = sw.load_spec(sweep_file, name=name)
    folder = Path(out) / spec.name
    if dry_run:
        planned = sw.plan(spec, folder)
        echo_columns(("job", "state", "command"),
                     [(job.name, state, shlex.join(["offrl", *args])) for job, state, args in planned])
        click.echo(f"{len(planned)} jobs in {folder}: " + ", ".join(
            f"{sum(s == state for _, s, _ in planned)} {state}" for state in ("new", "stopped", "running", "finished")))
        return
    outcome = sw.run(spec, folder, address=address, cpus=cpus, log=click.echo)
    if outcome["failed"] or outcome["stopped"]:
        sys.exit(1)


@main.group(invoke_without_command=True)
@click.option("--root", type=click.Path(), callback=existing_folder_or_none, help="leaderboards folder [default: the repository's results/]")
@click.pass_context
@friendly
def leaderboard(ctx, root):
    """Published leaderboards under results/: list them (no subcommand), show one, publish one."""
    from offrl import leaderboard as lb

    ctx.obj = root
    if ctx.invoked_subcommand is not None:
        return
    found = lb.boards(root)
    if not found:
        click.echo(f"no leaderboards in {root or lb.results_root()}")
        return
    header = ("name", "agents", "datasets", "rows", "steps")
    echo_columns(header, [tuple(str(b[k]) for k in header) for b in found])


@leaderboard.command("show")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "csv"]), default="text", show_default=True)
@click.pass_obj
@friendly
def leaderboard_show(root, name, fmt):
    """Print a published leaderboard's table (recomputed from its per-seed rows)."""
    from pathlib import Path

    from offrl import leaderboard as lb, results

    runs = Path(root or lb.results_root()) / name / "runs.csv"
    if not runs.is_file():
        raise OfflineRLError(f"no leaderboard {name!r} (no {runs}); `offrl leaderboard` lists them")
    click.echo(results.format_table(results.aggregate(results.read_rows(runs)), fmt=fmt))


@leaderboard.command("publish")
@click.argument("results_csv", type=click.Path())
@click.argument("name")
@click.option("--agent", "agent_names", help="agents to include, comma-separated [default: all in the table]")
@click.option("--env", "dataset_names", help="datasets to include, comma-separated [default: all]")
@click.option("--title", help="heading of the board's README [default: NAME]")
@click.option("--notes", help="a paragraph for the README: what the board is for, caveats")
@click.option("--force", is_flag=True, help="replace a published board of the same name")
@click.option("--add", is_flag=True, help="add the rows to the published board NAME, keeping what it holds "
                                          "(its rows, configs, title and notes)")
@click.option("--replace", is_flag=True, help="like --add, but the rows replace the board's rows of the same "
                                              "agent and dataset (a group trained again)")
@click.pass_obj
@friendly
def leaderboard_publish(root, results_csv, name, agent_names, dataset_names, title, notes, force, add, replace):
    """Publish rows of a results table as results/NAME (runs.csv, summary.csv, README.md)."""
    from offrl import leaderboard as lb, results

    split = (lambda text: [t.strip() for t in text.split(",") if t.strip()] if text else None)
    rows = lb.select(results.read_rows(results_csv), split(agent_names), split(dataset_names))
    target = lb.publish(rows, name, root=root, title=title, notes=notes, force=force, add=add, replace=replace)
    click.echo(f"{'added' if add else 'replaced with' if replace else 'published'} {len(rows)} rows "
               f"{'in' if replace else 'to'} {target}")


@main.command()
@click.option("--agent", "agent_names", default="td3bc", show_default=True, help="agent(s), comma-separated, or all")
@click.option("--env", "dataset", default="pointmass-medium", show_default=True)
@click.option("--seeds", "seed_counts", default="1,4,16", show_default=True, callback=positive_counts,
              help="seed counts S to time")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="timed updates per S")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads [default: chosen from the cores free at the start]")
@compile_option
@click.option("--set", "sets", multiple=True, help="agent config override key=value (repeatable)")
@click.option("--csv", "as_csv", is_flag=True, help="print CSV instead of a table")
@click.option("--plugin", "plugins", multiple=True, type=click.Path())
@click.option("--from", "from_runs", multiple=True, type=click.Path(),
              help="time the agent of this run folder from its checkpoint, with the run's dataset, config and seed "
                   "count (repeatable, e.g. a TD3+BC run and a PRDC run; --agent, --env, --seeds, --set unused)")
@click.option("--trust-plugins", is_flag=True, help="with --from: import the plugin files the runs' run.yaml "
              "names (they run with your rights; without this, pass each one again with --plugin)")
@friendly
def bench(agent_names, dataset, seed_counts, steps, device, threads, compile_mode, sets, as_csv, plugins, from_runs,
          trust_plugins):
    """Updates per second for S seeds in one process (whole steps: sampling + update), FLOPs and efficiency."""
    import torch

    from offrl import config as cfg
    from offrl import registry
    from offrl.bench import BenchJob, benchmark, jobs_from_runs, matmul_gflops
    from offrl.build import load_plugins
    from offrl.compile import resolve_mode
    from offrl.cpu_load import free_cores, wait_policy
    from offrl.data import resolve
    from offrl.machine import hardware, pick_device, set_threads

    jobs = jobs_from_runs(from_runs, plugins, trust_plugins)
    load_plugins(tuple(plugins) + tuple(p for job in jobs for p in job.plugins))  # before any agent is built
    if not from_runs:
        names = [a.name for a in registry.all_agents()] if agent_names == "all" else agent_names.split(",")
        jobs = [BenchJob(registry.resolve_variant(name, cfg.parse_set(sets)), dataset, None, s, cfg.parse_set(sets))
                for name in names for s in parse_seeds(seed_counts)]
        for job in jobs:  # agent names and --set values, before any dataset is built
            cfg.apply(registry.get(job.agent).config_cls(), job.overrides)
    dev = pick_device(device)
    resolve_mode(compile_mode, dev)  # a mode this device cannot run is an error before any work
    datasets = {}
    for job in jobs:
        if (job.dataset, job.dataset_size) not in datasets:
            datasets[(job.dataset, job.dataset_size)] = resolve(job.dataset, size=job.dataset_size)
    peaks = {}
    for job in jobs:  # the matmul peak at each thread count used
        t = set_threads(threads, job.seeds)
        if t not in peaks:
            peaks[t] = matmul_gflops(dev)
    cols = ["agent", "S", "threads", "mode", "updates/s", "seed-updates/s", "GFLOP/update", "GFLOP/s",
            "peak GFLOP/s", "efficiency"]
    say = (lambda msg: None) if as_csv else click.echo
    if as_csv:
        click.echo(",".join(cols + ["device", "hardware", "torch", "dataset", "from"]))
    else:
        names = sorted({ds.name for ds in datasets.values()})
        click.echo(f"device {dev} ({hardware(dev)}), torch {torch.__version__}, dataset {', '.join(names)}, "
                   f"--compile {compile_mode}, OpenMP wait {wait_policy()}, free cores at start {free_cores()}")
        click.echo(f"{'agent':<8} {'S':>3} {'thr':>3} {'mode':>10} {'upd/s':>8} {'seed-upd/s':>10} {'GFLOP/upd':>9} "
                   f"{'GFLOP/s':>8} {'peak':>6} {'eff':>5}" + ("  from" if from_runs else ""))
    for job in jobs:
        ds, s = datasets[(job.dataset, job.dataset_size)], job.seeds
        r = benchmark(job.agent, ds, s, steps=steps, device=dev, threads=threads, peak=peaks[set_threads(threads, s)],
                      overrides=job.overrides, compile_mode=compile_mode, log=say, agent_state=job.agent_state)
        if as_csv:
            click.echo(f"{job.agent},{s},{r.threads},{r.mode},{r.updates_per_s:.2f},{r.seed_updates_per_s:.2f},"
                       f"{r.gflop_per_update:.4f},{r.gflops:.2f},{r.peak_gflops:.2f},{r.efficiency:.3f},"
                       f"{dev},{hardware(dev)},{torch.__version__},{ds.name},{job.origin}")
        else:
            click.echo(f"{job.agent:<8} {s:>3} {r.threads:>3} {r.mode:>10} {r.updates_per_s:>8.1f} "
                       f"{r.seed_updates_per_s:>10.1f} {r.gflop_per_update:>9.3f} {r.gflops:>8.1f} "
                       f"{r.peak_gflops:>6.1f} {100 * r.efficiency:>4.0f}%" + (f"  {job.origin}" if job.origin else ""))


@main.group()
def cache():
    """Pre-training artefacts (dynamics models, ...) cached by dataset, stage, config and seed."""


@cache.command("list")
@friendly
def cache_list():
    """Cached artefacts with their stage, dataset, config hash, seed, size and date."""
    from offrl.cache import Cache

    entries = Cache().list_entries()
    if not entries:
        click.echo("the cache is empty")
    for e in entries:
        click.echo(f"{e.stage:<18} {e.dataset:<28} config {e.config_hash[:12]}  seed {str(e.seed):<4} "
                   f"{e.size_bytes / 1e6:8.1f} MB  {e.created}  {e.path}"
                   + ("" if e.complete else "  (incomplete: a build is running or was stopped; it resumes)"))


@cache.command("clear")
@click.option("--stage", help="only this stage")
@click.option("--dataset", help="only this dataset (name or fingerprint prefix)")
@friendly
def cache_clear(stage, dataset):
    """Remove cached artefacts (all, or those of a stage and/or dataset)."""
    from offrl.cache import Cache

    removed = Cache().clear(stage=stage, dataset=dataset)
    click.echo(f"removed {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'}")


@main.group()
def datasets():
    """Datasets: what is local, what can be built, what a name resolves to."""


@datasets.command("list")
@friendly
def datasets_list():
    """Generated datasets (built or buildable) with their sizes; `behaviour` is the mean normalised return of
    a built dataset's complete episodes ("-" if built before it was recorded). "stale": built by another
    version of the recipe (other behaviour policies); `datasets build NAME --force` rebuilds it."""
    from offrl.data import recipes

    recipes.load_builtin()

    click.echo(f"{'name':<28} {'status':<8} {'transitions':>11} {'episodes':>9} {'behaviour':>9} {'build s':>8}  "
               "minari id")
    for recipe in recipes.RECIPES.values():
        for level in recipe.levels:
            dsid = recipes.minari_id(recipe, level)
            if recipes.is_built(dsid):
                prov = recipes.read_provenance(dsid)
                score = prov.get("behaviour_normalized_return")
                status = "stale" if recipes.stale(recipe, prov) else "built"  # not this recipe's: rebuild
                click.echo(f"{recipe.family + '-' + level:<28} {status:<8} {prov['transitions']:>11,} "
                           f"{prov['episodes']:>9,} {'-' if score is None else f'{score:.1f}':>9} "
                           f"{prov['build_seconds']:>8.1f}  {dsid}")
            else:
                click.echo(f"{recipe.family + '-' + level:<28} {'-':<8} {recipe.default_size[level]:>11,} "
                           f"{'':>9} {'':>9} {'':>8}  {dsid}")
        if recipe.tasks is not None:  # reward-free: evaluated zero-shot on each task of its set
            click.echo(f"  {recipe.family}-*: reward-free, tasks {', '.join(recipe.tasks().names)}")


@datasets.command("build")
@click.argument("names", nargs=-1, required=True)
@click.option("--size", type=int, help="transitions (default: the recipe's)")
@click.option("--force", is_flag=True, help="rebuild even if present")
@click.option("--workers", type=int, help="processes rolling out episodes (MuJoCo recipes) [default: the usable "
                                          "cores]; the data does not depend on it")
@friendly
def datasets_build(names, size, force, workers):
    """Generate the suite's datasets (no download)."""
    from offrl.data import recipes

    recipes.load_builtin()

    if workers is not None and workers < 1:
        raise OfflineRLError(f"--workers must be at least 1, got {workers}")
    for name in names:
        found = recipes.split_name(name.split(":", 1)[-1])
        if found is None:
            from offrl.data.resolve import buildable_names
            raise OfflineRLError(f"unknown dataset {name!r}: offrl can build {', '.join(buildable_names())}")
        try:
            recipes.build(*found, size=size, force=force, workers=workers)
        except KeyboardInterrupt:
            click.echo(f"interrupted: {name} was not stored (a build writes nothing until it is complete)", err=True)
            sys.exit(130)


@datasets.command("train-behaviour")
@click.argument("env")
@click.option("--steps", type=int, help="env steps [default: the env's budget in envs/behaviour.py]")
@click.option("--seed", type=int, default=0, show_default=True)
@friendly
def datasets_train_behaviour(env, steps, seed):
    """Train the behaviour policies of a MuJoCo recipe (hopper, halfcheetah, walker2d, ant) with SB3 PPO (ant: SAC) and
    write them to envs/policies/ENV (resumes an interrupted run with the same seed)."""
    from offrl.data import recipes

    train = recipes.behaviour_trainer(env)
    try:
        train(total_steps=steps, seed=seed, log=lambda msg: click.echo(msg, err=False))
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to resume from the last snapshot", err=True)
        sys.exit(130)


@datasets.command("info")
@click.argument("name")
@click.option("--size", type=int, help="transitions of a generated dataset")
@friendly
def datasets_info(name, size):
    """Transitions, episodes, return statistics (raw and normalised), reference scores, provenance."""
    import numpy as np

    from offrl.data import resolve

    ds = resolve(name, size=size)
    rets = ds.episode_returns()
    click.echo(f"name         {ds.name} (source {ds.source}, version {ds.version})")
    click.echo(f"transitions  {len(ds):,}   episodes {len(rets):,}   terminals {int(ds.terminals.sum()):,}   "
               f"timeouts {int(ds.timeouts.sum()):,}")
    click.echo(f"obs dim      {ds.spec.obs_dim}   action dim {ds.spec.act_dim}")
    if ds.reward_free:
        click.echo("returns      none: reward-free (each task's reward is computed when it is evaluated)")
    else:
        click.echo(f"returns      mean {rets.mean():.2f}  std {rets.std():.2f}  min {rets.min():.2f}  "
                   f"max {rets.max():.2f}")
    if ds.has_reference_scores:
        norm = ds.normalized_score(rets)
        click.echo(f"normalised   mean {norm.mean():.1f}  std {norm.std():.1f}  min {norm.min():.1f}  "
                   f"max {norm.max():.1f}")
        click.echo(f"reference    ref_min_score {ds.ref_min_score:.4f}   ref_max_score {ds.ref_max_score:.4f}")
    elif ds.tasks is not None:  # reward-free: each task has its own reference returns
        click.echo("reference    per task: " + ", ".join(f"{t.name} {t.ref_min_score:g} to {t.ref_max_score:g}"
                                                        for t in ds.tasks))
    else:
        click.echo("reference    none (normalised scores unavailable)")
    if ds.extras:
        click.echo(f"extras       {', '.join(f'{k} {list(v.shape[1:])}' for k, v in ds.extras.items())}")
    for key, value in ds.provenance.items():
        if key not in ("observation_layout",):
            click.echo(f"  {key}: {value if not isinstance(value, (list, np.ndarray)) else list(value)}")


@main.group()
def dynamics():
    """Dynamics models fitted to datasets (the cached pre-training stage of model-based agents)."""


@dynamics.command("report")
@click.argument("dataset")
@click.option("--agent", help="use this agent's model settings (e.g. csve), with its per-family defaults")
@click.option("--direction", type=click.Choice(["forward", "reverse"]), default="forward", show_default=True)
@click.option("--set", "sets", multiple=True, help="override key=value: of the agent's config with --agent, "
                                                   "else of offrl.dynamics.DynamicsConfig")
@click.option("--horizons", default="1,5", show_default=True, callback=positive_counts,
              help="open-loop rollout lengths H")
@click.option("--device", default="auto", show_default=True)
@click.option("--dataset-size", type=int, help="transitions of a generated dataset (default: the recipe's)")
@friendly
def dynamics_report(dataset, agent, direction, sets, horizons, device, dataset_size):
    """Hold-out MSE per member and H-step rollout error of a dataset's model (fitted now, or from the cache)."""
    import dataclasses

    from offrl import config as cfg
    from offrl import registry
    from offrl.cache import Cache
    from offrl.data import resolve
    from offrl.dynamics import DynamicsConfig, load_or_fit
    from offrl.machine import pick_device

    dev = pick_device(device)
    ds = resolve(dataset, size=dataset_size)
    if agent:
        info = registry.get(agent)
        made = registry.make(agent, ds.spec, cfg.resolve_config(info, ds.family, overrides=cfg.parse_set(sets)),
                             [0], dev)
        if not hasattr(made, "dynamics_config"):
            raise OfflineRLError(f"agent {agent} has no dynamics model (no dynamics_config())")
        model_cfg = made.dynamics_config()
        if direction == "reverse":
            model_cfg = dataclasses.replace(model_cfg, direction="reverse")
    else:
        model_cfg = cfg.apply(DynamicsConfig(direction=direction), cfg.parse_set(sets))
    model = load_or_fit(ds, model_cfg, cache=Cache(), device=dev)
    rep = model.report
    h_list = parse_seeds(horizons, "--horizons")
    errors = model.rollout_error(ds, horizons=h_list)
    click.echo(f"{direction} model of {ds.name}: {model_cfg.members} members, elites {rep['elites']}, "
               f"{rep['epochs']} epochs, {rep['updates']} updates (stopped by {rep['stopped']}), "
               f"fitted in {rep['wall_s']:.1f} s on "
               f"{rep['train_size']:,} transitions, hold-out {rep['holdout_size']:,}")
    click.echo(f"{'member':>6}  {'hold-out MSE':>12}  elite   (MSE of the mean prediction of [Δs, r] on held-out transitions)")
    for i, mse in enumerate(rep["holdout_mse"]):
        click.echo(f"{i:>6}  {mse:>12.5g}  {'*' if i in rep['elites'] else ''}")
    click.echo(f"elites' mean hold-out MSE {rep['holdout_mse_elites']:.5g}")
    for h in h_list:
        click.echo(f"rollout error H={h}: {errors[h]:.5g} (mean squared state error, deterministic elite-mean "
                   f"steps on the dataset's actions)")


if __name__ == "__main__":
    main()
